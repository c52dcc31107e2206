package grpcx

import (
	"bytes"
	"net"
	"slices"
	"testing"
)

// countingConn records each Write reaching the socket.
type countingConn struct {
	net.Conn
	writes [][]byte
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestRecordBatch_OneSyscallPerWrite(t *testing.T) {
	tests := []struct {
		name  string
		steps func(r *recordBatch)
		want  [][]byte
	}{
		{"outside a write: through at once", func(r *recordBatch) {
			r.Write([]byte("alert"))
			r.Write([]byte("update"))
		}, [][]byte{[]byte("alert"), []byte("update")}},
		{"records of one write: together", func(r *recordBatch) {
			r.begin()
			r.Write([]byte("rec1"))
			r.Write([]byte("rec2"))
			r.Write([]byte("rec3"))
			if err := r.end(); err != nil {
				t.Fatal(err)
			}
			r.Write([]byte("after"))
		}, [][]byte{[]byte("rec1rec2rec3"), []byte("after")}},
		{"empty write: nothing sent", func(r *recordBatch) {
			r.begin()
			if err := r.end(); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"oversized batch: sent at the limit", func(r *recordBatch) {
			r.begin()
			r.Write(bytes.Repeat([]byte{1}, batchLimit))
			r.Write([]byte{2})
			if err := r.end(); err != nil {
				t.Fatal(err)
			}
		}, [][]byte{bytes.Repeat([]byte{1}, batchLimit), {2}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &countingConn{}
			tc.steps(&recordBatch{Conn: c})
			if !slices.EqualFunc(tc.want, c.writes, bytes.Equal) {
				t.Errorf("socket writes of %v bytes, want %v", lens(c.writes), lens(tc.want))
			}
		})
	}
}

func lens(bs [][]byte) []int {
	out := make([]int, len(bs))
	for i, b := range bs {
		out[i] = len(b)
	}
	return out
}
