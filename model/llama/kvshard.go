package llama

import (
	"errors"
	"fmt"

	"github.com/tandemserve/tandem/kernels"
)

// ShardedKVCache is the KV cache of a tensor-parallel model: one shard per
// rank, each holding that rank's contiguous range of KV heads for every
// block. Its block bytes (ReadBlock/WriteBlock) are those of an unsharded
// cache of the whole model: every K and V row is the concatenation of the
// ranks' head ranges (and, for int8, of their scales), so a transfer between
// workers of different tensor-parallel degrees moves the same bytes.
type ShardedKVCache struct {
	spec   kernels.KVSpec
	shards []kernels.KVCache
}

var _ kernels.KVCache = (*ShardedKVCache)(nil)

// NewShardedKVCache joins rank shards of equal shape into one cache.
func NewShardedKVCache(shards []kernels.KVCache) (*ShardedKVCache, error) {
	if len(shards) == 0 {
		return nil, fmt.Errorf("%w: no KV shards", kernels.ErrInvalidKVSpec)
	}
	spec := shards[0].Spec()
	for i, s := range shards {
		if s.Spec() != spec {
			return nil, fmt.Errorf("%w: shard %d is %+v, shard 0 %+v", kernels.ErrInvalidKVSpec, i, s.Spec(), spec)
		}
	}
	whole := spec
	whole.KVHeads *= len(shards)
	return &ShardedKVCache{spec: whole, shards: shards}, nil
}

// Spec implements kernels.KVCache: the whole model's shape.
func (c *ShardedKVCache) Spec() kernels.KVSpec { return c.spec }

// Shards returns the rank shards.
func (c *ShardedKVCache) Shards() []kernels.KVCache { return c.shards }

// Region implements kernels.KVCache: the shards are separate memory, so
// blocks are reached through ReadBlock and WriteBlock.
func (c *ShardedKVCache) Region(int) ([]byte, bool) { return nil, false }

// rowParts returns, for shard r, the byte ranges of a whole-model row that
// hold its part: (offset in the whole row, offset in the shard row, length).
func (c *ShardedKVCache) rowParts(r int) [][3]int {
	n := len(c.shards)
	hd, heads := c.spec.HeadDim, c.spec.KVHeads/n
	switch c.spec.DType {
	case kernels.KVInt8:
		return [][3]int{
			{r * heads * hd, 0, heads * hd},
			{c.spec.KVHeads*hd + r*heads*4, heads * hd, heads * 4},
		}
	default:
		return [][3]int{{r * heads * hd * 2, 0, heads * hd * 2}}
	}
}

// copyRows moves shard r's part of every K and V row of one block between
// the whole block and the shard block.
func (c *ShardedKVCache) copyRows(r int, whole, shard []byte, toWhole bool) {
	shardSpec := c.shards[r].Spec()
	parts := c.rowParts(r)
	for s := 0; s < c.spec.BlockSize; s++ {
		for _, kv := range [2][2]int{
			{c.spec.KeyRowOffset(s), shardSpec.KeyRowOffset(s)},
			{c.spec.ValueRowOffset(s), shardSpec.ValueRowOffset(s)},
		} {
			for _, p := range parts {
				w := whole[kv[0]+p[0] : kv[0]+p[0]+p[2]]
				sh := shard[kv[1]+p[1] : kv[1]+p[1]+p[2]]
				if toWhole {
					copy(w, sh)
				} else {
					copy(sh, w)
				}
			}
		}
	}
}

// ReadBlock implements kernels.KVCache. Like the shards' own block I/O it
// may run beside other transfers, so each call has its own staging buffer.
func (c *ShardedKVCache) ReadBlock(layer, block int, dst []byte) error {
	if len(dst) != c.spec.BlockBytes() {
		return fmt.Errorf("llama: ReadBlock into %d bytes, block is %d", len(dst), c.spec.BlockBytes())
	}
	tmp := make([]byte, c.shards[0].Spec().BlockBytes())
	for r, s := range c.shards {
		if err := s.ReadBlock(layer, block, tmp); err != nil {
			return err
		}
		c.copyRows(r, dst, tmp, true)
	}
	return nil
}

// WriteBlock implements kernels.KVCache.
func (c *ShardedKVCache) WriteBlock(layer, block int, src []byte) error {
	if len(src) != c.spec.BlockBytes() {
		return fmt.Errorf("llama: WriteBlock of %d bytes, block is %d", len(src), c.spec.BlockBytes())
	}
	tmp := make([]byte, c.shards[0].Spec().BlockBytes())
	for r, s := range c.shards {
		c.copyRows(r, src, tmp, false)
		if err := s.WriteBlock(layer, block, tmp); err != nil {
			return err
		}
	}
	return nil
}

// Close implements kernels.KVCache, closing every shard.
func (c *ShardedKVCache) Close() error {
	var errs []error
	for _, s := range c.shards {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
