package shm

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/tandemserve/tandem/transport"
)

// maxMessage bounds a control message: payload never travels on the socket,
// so every legitimate message is small.
const maxMessage = 64 << 10

// writeMsg writes m with its 4-byte big-endian length prefix, attaching fds
// (SCM_RIGHTS) when given.
func writeMsg(c *net.UnixConn, buf []byte, m proto.Message, fds ...int) ([]byte, error) {
	buf, err := appendMsg(buf[:0], m)
	if err != nil {
		return buf, err
	}
	if len(fds) > 0 {
		n, _, err := c.WriteMsgUnix(buf, unix.UnixRights(fds...), nil)
		if err == nil && n != len(buf) {
			_, err = c.Write(buf[n:])
		}
		return buf, err
	}
	_, err = c.Write(buf)
	return buf, err
}

// appendMsg appends m with its 4-byte big-endian length prefix to buf, so
// several messages can leave in one write.
func appendMsg(buf []byte, m proto.Message) ([]byte, error) {
	at := len(buf)
	buf = append(buf, 0, 0, 0, 0)
	buf, err := proto.MarshalOptions{}.MarshalAppend(buf, m)
	if err != nil {
		return buf[:at], fmt.Errorf("shm: encode: %w", err)
	}
	binary.BigEndian.PutUint32(buf[at:], uint32(len(buf)-at-4))
	return buf, nil
}

// reader decodes length-prefixed messages and collects file descriptors
// that arrive alongside them. It is used by one goroutine.
type reader struct {
	br  *bufio.Reader
	fr  *fdReader
	buf []byte
}

// newReader reads c, holding at most maxFDs descriptors that arrive
// ahead of the message they belong to.
func newReader(c *net.UnixConn, maxFDs int) *reader {
	fr := &fdReader{c: c, max: maxFDs, oob: make([]byte, unix.CmsgSpace(4*4))}
	return &reader{br: bufio.NewReaderSize(fr, 4096), fr: fr}
}

// read decodes the next message into m.
func (r *reader) read(m proto.Message) error {
	return decode(r.br, &r.buf, m)
}

// decode reads one length-prefixed message from br; it is the parser the
// fuzz test drives with arbitrary bytes.
func decode(br io.Reader, buf *[]byte, m proto.Message) error {
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxMessage {
		return fmt.Errorf("%w: shm: control message of %d bytes exceeds %d", transport.ErrProtocol, n, maxMessage)
	}
	if cap(*buf) < int(n) {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	if _, err := io.ReadFull(br, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: shm: decode: %w", transport.ErrProtocol, err)
	}
	return nil
}

// takeFDs returns the n descriptors received with the message just read.
func (r *reader) takeFDs(n int) ([]int, error) {
	fds := r.fr.take()
	if len(fds) != n {
		closeFDs(fds)
		return nil, fmt.Errorf("%w: shm: expected %d file descriptors, got %d", transport.ErrProtocol, n, len(fds))
	}
	return fds, nil
}

// buffered reports whether another message has already been read in, so
// an answer can wait to share a write with the next one.
func (r *reader) buffered() bool { return r.br.Buffered() > 0 }

// close releases descriptors received but never taken.
func (r *reader) close() { closeFDs(r.fr.take()) }

type fdReader struct {
	c   *net.UnixConn
	oob []byte
	max int

	mu  sync.Mutex
	fds []int
}

func (f *fdReader) Read(p []byte) (int, error) {
	n, oobn, _, _, err := f.c.ReadMsgUnix(p, f.oob)
	n = max(n, 0) // the syscall reports -1 with its errors
	if oobn > 0 {
		if msgs, perr := unix.ParseSocketControlMessage(f.oob[:oobn]); perr == nil {
			for _, m := range msgs {
				if fds, ferr := unix.ParseUnixRights(&m); ferr == nil {
					f.keep(fds)
				}
			}
		}
	}
	return n, err
}

// keep holds at most max pending descriptors, as many as one protocol
// message carries; a peer sending more cannot make us hoard descriptors.
func (f *fdReader) keep(fds []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fd := range fds {
		if len(f.fds) < f.max {
			f.fds = append(f.fds, fd)
		} else {
			unix.Close(fd)
		}
	}
}

func (f *fdReader) take() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	fds := f.fds
	f.fds = nil
	return fds
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
