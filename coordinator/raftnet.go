package coordinator

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// tlsStreamLayer carries Raft over mutual TLS. hashicorp/raft's TCP transport has no
// authentication: anyone who can reach the port could append to the log. Here both sides present
// certificates from the cluster CA.
type tlsStreamLayer struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

func newTLSStreamLayer(bind, advertise string, server *tls.Config) (*tlsStreamLayer, error) {
	if server.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, fmt.Errorf("%w: raft TLS must require and verify client certificates", ErrConfig)
	}
	ln, err := tls.Listen("tcp", bind, server)
	if err != nil {
		return nil, fmt.Errorf("coordinator: raft listen %s: %w", bind, err)
	}
	adv := ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("%w: raft advertise %q: %w", ErrConfig, advertise, err)
		}
		adv = a
	}
	client := server.Clone()
	client.ClientAuth = tls.NoClientCert
	return &tlsStreamLayer{Listener: ln, advertise: adv, client: client}, nil
}

// Addr is the advertised address (what peers store in the configuration).
func (l *tlsStreamLayer) Addr() net.Addr { return l.advertise }

// Dial opens a TLS connection to a peer, verifying its certificate.
func (l *tlsStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	host, _, err := net.SplitHostPort(string(addr))
	if err != nil {
		return nil, fmt.Errorf("coordinator: raft dial %s: %w", addr, err)
	}
	cfg := l.client.Clone()
	cfg.ServerName = host
	return tls.DialWithDialer(d, "tcp", string(addr), cfg)
}

// raftPlumbing is everything raft.NewRaft needs besides the FSM, plus what must be closed.
type raftPlumbing struct {
	transport raft.Transport
	logs      raft.LogStore
	stable    raft.StableStore
	snaps     raft.SnapshotStore
	closers   []io.Closer
}

func (p *raftPlumbing) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		_ = p.closers[i].Close()
	}
}

func setupRaftPlumbing(cfg *Config, deps *Deps, log *slog.Logger) (*raftPlumbing, error) {
	if deps.Transport != nil {
		if deps.LogStore == nil || deps.StableStore == nil || deps.SnapshotStore == nil {
			return nil, fmt.Errorf("%w: in-memory deps need transport, log, stable and snapshot stores", ErrConfig)
		}
		return &raftPlumbing{transport: deps.Transport, logs: deps.LogStore, stable: deps.StableStore, snaps: deps.SnapshotStore}, nil
	}
	if cfg.DataDir == "" || cfg.RaftBind == "" {
		return nil, fmt.Errorf("%w: data dir and raft bind address are required", ErrConfig)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("coordinator: data dir: %w", err)
	}
	p := &raftPlumbing{}
	ok := false
	defer func() {
		if !ok {
			p.close()
		}
	}()
	bolt, err := raftboltdb.NewBoltStore(filepath.Join(cfg.DataDir, "raft.db"))
	if err != nil {
		return nil, fmt.Errorf("coordinator: raft store: %w", err)
	}
	p.closers = append(p.closers, bolt)
	p.logs, p.stable = bolt, bolt
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, newHCLogger("raft-snapshots", log))
	if err != nil {
		return nil, fmt.Errorf("coordinator: snapshot store: %w", err)
	}
	p.snaps = snaps
	hl := newHCLogger("raft-net", log)
	if cfg.RaftTLS != nil {
		layer, err := newTLSStreamLayer(cfg.RaftBind, cfg.RaftAdvertise, cfg.RaftTLS)
		if err != nil {
			return nil, err
		}
		tr := raft.NewNetworkTransportWithLogger(layer, 3, 10*time.Second, hl)
		p.transport = tr
		p.closers = append(p.closers, tr)
	} else {
		// A nil advertise address makes raft advertise the listener's address, which is what
		// a bind to port 0 needs.
		var addr net.Addr
		if cfg.RaftAdvertise != "" {
			a, err := net.ResolveTCPAddr("tcp", cfg.RaftAdvertise)
			if err != nil {
				return nil, fmt.Errorf("%w: raft advertise %q: %w", ErrConfig, cfg.RaftAdvertise, err)
			}
			addr = a
		}
		tr, err := raft.NewTCPTransportWithLogger(cfg.RaftBind, addr, 3, 10*time.Second, hl)
		if err != nil {
			return nil, fmt.Errorf("coordinator: raft transport: %w", err)
		}
		p.transport = tr
		p.closers = append(p.closers, tr)
	}
	ok = true
	return p, nil
}
