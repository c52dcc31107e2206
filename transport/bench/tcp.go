package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// tcpPair is the raw-socket baseline: a loopback connection whose far end
// reads each transfer into a destination buffer and answers one byte, the
// least any transfer protocol must do.
type tcpPair struct {
	client net.Conn
	wg     sync.WaitGroup
	errc   chan error
	lis    net.Listener
}

func newTCPPair(maxBytes int) (*tcpPair, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	p := &tcpPair{lis: lis, errc: make(chan error, 1)}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		c, err := lis.Accept()
		if err != nil {
			p.errc <- err
			return
		}
		defer c.Close()
		dst := make([]byte, maxBytes)
		var hdr [4]byte
		for {
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return // client closed
			}
			n := int(uint32(hdr[0])<<24 | uint32(hdr[1])<<16 | uint32(hdr[2])<<8 | uint32(hdr[3]))
			if n > len(dst) {
				p.errc <- fmt.Errorf("bench: tcp transfer of %d bytes", n)
				return
			}
			if _, err := io.ReadFull(c, dst[:n]); err != nil {
				p.errc <- err
				return
			}
			if _, err := c.Write(hdr[:1]); err != nil {
				p.errc <- err
				return
			}
		}
	}()
	if p.client, err = net.Dial("tcp", lis.Addr().String()); err != nil {
		lis.Close()
		p.wg.Wait()
		return nil, fmt.Errorf("bench: %w", err)
	}
	return p, nil
}

// transfer sends src and waits for the acknowledgement.
func (p *tcpPair) transfer(ctx context.Context, src []byte) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	start := time.Now()
	n := len(src)
	hdr := []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	if _, err := p.client.Write(hdr); err != nil {
		return 0, err
	}
	if _, err := p.client.Write(src); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(p.client, hdr[:1]); err != nil {
		select {
		case serr := <-p.errc:
			return 0, serr
		default:
			return 0, err
		}
	}
	return time.Since(start), nil
}

func (p *tcpPair) close() {
	p.client.Close()
	p.lis.Close()
	p.wg.Wait()
}
