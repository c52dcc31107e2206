package cpu

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tandemserve/tandem/kernels"
)

// The cache lives in one sealed memfd whose layer regions another process
// may map: bytes written through one mapping are seen through the other,
// and the file cannot be resized under either.
func TestKVCacheSharedFile(t *testing.T) {
	b := newBackend(t, DefaultConfig())
	spec := kernels.KVSpec{Layers: 3, Blocks: 5, BlockSize: 4, KVHeads: 2, HeadDim: 8, DType: kernels.KVF16}
	c, err := b.NewKVCache(spec)
	if err != nil {
		t.Fatal(err)
	}
	kc := c.(*kvCache)
	fd, offsets, ok := kc.MemFD()
	if !ok || len(offsets) != spec.Layers {
		t.Fatalf("MemFD = %d, %v, %v", fd, offsets, ok)
	}
	region := spec.Blocks * spec.BlockBytes()
	other, err := unix.Mmap(fd, 0, spec.Layers*region, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(other)

	block := bytes.Repeat([]byte{0xa5}, spec.BlockBytes())
	if err := c.WriteBlock(2, 3, block); err != nil {
		t.Fatal(err)
	}
	at := int(offsets[2]) + 3*spec.BlockBytes()
	if !bytes.Equal(other[at:at+len(block)], block) {
		t.Error("a block written through the cache is not in the shared file")
	}
	copy(other[int(offsets[1]):], bytes.Repeat([]byte{0x3c}, spec.BlockBytes()))
	got := make([]byte, spec.BlockBytes())
	if err := c.ReadBlock(1, 0, got); err != nil {
		t.Fatal(err)
	}
	if got[0] != 0x3c || got[len(got)-1] != 0x3c {
		t.Error("a block written through the shared file is not in the cache")
	}
	if err := unix.Ftruncate(fd, 0); err == nil {
		t.Error("the shared KV file could be shrunk")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := kc.MemFD(); ok {
		t.Error("MemFD after Close")
	}
}
