package grpcx_test

import (
	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/wire"
)

func descriptorProto(d transport.Descriptor) *transportv1.Descriptor { return wire.Descriptor(d) }
