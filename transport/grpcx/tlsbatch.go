package grpcx

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// batchedTLS is TLS transport credentials whose connections send each
// gRPC write in one system call. crypto/tls writes every record (at most
// 16 KiB of payload) to the socket on its own, so a 256 KiB flush of
// gRPC's write buffer costs 16 syscalls, and on loopback those dominate a
// transfer; batched, the records of one Write leave together. The records
// and their order are unchanged; only the syscall boundaries move.
type batchedTLS struct {
	credentials.TransportCredentials
}

var _ credentials.TransportCredentials = batchedTLS{}

func (b batchedTLS) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	rb := &recordBatch{Conn: raw}
	conn, info, err := b.TransportCredentials.ClientHandshake(ctx, authority, rb)
	if err != nil {
		return nil, nil, err
	}
	return &batchedConn{Conn: conn, rb: rb}, info, nil
}

func (b batchedTLS) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	rb := &recordBatch{Conn: raw}
	conn, info, err := b.TransportCredentials.ServerHandshake(rb)
	if err != nil {
		return nil, nil, err
	}
	return &batchedConn{Conn: conn, rb: rb}, info, nil
}

func (b batchedTLS) Clone() credentials.TransportCredentials {
	return batchedTLS{b.TransportCredentials.Clone()}
}

// batchedConn is the TLS connection seen by gRPC. A Write gathers the
// records it produces and sends them at once before returning, so nothing
// stays buffered between Writes.
type batchedConn struct {
	net.Conn // the TLS connection
	rb       *recordBatch
	mu       sync.Mutex // one Write at a time owns the batch
}

func (c *batchedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rb.begin()
	n, err := c.Conn.Write(p)
	if ferr := c.rb.end(); err == nil {
		err = ferr
	}
	return n, err
}

// recordBatch sits under crypto/tls, on the raw connection. Between begin
// and end it collects what TLS writes; outside them (the handshake, an
// alert or key update sent while reading, close_notify) it writes through.
type recordBatch struct {
	net.Conn
	mu       sync.Mutex
	batching bool
	buf      []byte
}

// batchLimit bounds the batch: gRPC writes at most its write buffer at a
// time, so this is only reached by a caller writing more in one call.
const batchLimit = 1 << 20

func (r *recordBatch) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.batching {
		return r.Conn.Write(p)
	}
	// TLS reuses its record buffer, so the bytes are copied, not kept.
	r.buf = append(r.buf, p...)
	if len(r.buf) >= batchLimit {
		if err := r.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (r *recordBatch) begin() {
	r.mu.Lock()
	r.batching = true
	r.mu.Unlock()
}

// end sends the batch and goes back to writing through.
func (r *recordBatch) end() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batching = false
	return r.flushLocked()
}

func (r *recordBatch) flushLocked() error {
	if len(r.buf) == 0 {
		return nil
	}
	_, err := r.Conn.Write(r.buf)
	r.buf = r.buf[:0]
	return err
}
