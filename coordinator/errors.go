package coordinator

import "errors"

// Sentinel errors. The gRPC layer (package api) maps them to status codes in one place.
var (
	ErrNotLeader     = errors.New("coordinator: not the leader")
	ErrNoLeader      = errors.New("coordinator: no leader elected")
	ErrConfig        = errors.New("coordinator: invalid config")
	ErrInvalid       = errors.New("coordinator: invalid argument")
	ErrUnknownNode   = errors.New("coordinator: unknown node")
	ErrUnknownModel  = errors.New("coordinator: unknown model")
	ErrBadPlacement  = errors.New("coordinator: placement not issued by this cluster")
	ErrClosed        = errors.New("coordinator: server closed")
	ErrNothingToDo   = errors.New("coordinator: request has no tokens left to generate")
	ErrStateConflict = errors.New("coordinator: node is not in a state that allows this")
)
