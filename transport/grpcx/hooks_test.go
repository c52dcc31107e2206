package grpcx

import "google.golang.org/grpc"

// ServerCodec lets tests serve this package's Server methods from a gRPC
// server of their own (to wrap or count calls) with the codec Push needs.
func ServerCodec() grpc.ServerOption { return grpc.ForceServerCodecV2(newCodec()) }
