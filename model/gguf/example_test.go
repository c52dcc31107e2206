package gguf_test

import (
	"bytes"
	"fmt"
	"log"

	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/model/gguf"
)

// A file written with Write and read back with Parse (Open does the same
// from a path, memory-mapping it).
func Example() {
	arch, _ := gguf.NewValue("llama")
	layers, _ := gguf.NewValue(uint32(2))
	vocab, _ := gguf.NewValue([]string{"<s>", "</s>", "hi"})

	w := make([]float32, 64)
	for i := range w {
		w[i] = float32(i) / 64
	}
	data := make([]byte, quant.Q8_0.RowBytes(len(w)))
	if err := quant.Quantize(quant.Q8_0, w, data); err != nil {
		log.Fatal(err)
	}

	var buf bytes.Buffer
	err := gguf.Write(&buf,
		[]gguf.KV{{Key: "general.architecture", Value: arch}, {Key: "llama.block_count", Value: layers}, {Key: "tokenizer.ggml.tokens", Value: vocab}},
		[]gguf.WriteTensor{{Name: "output.weight", Dims: []uint64{32, 2}, Type: quant.Q8_0, Data: data}})
	if err != nil {
		log.Fatal(err)
	}

	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		log.Fatal(err)
	}
	n, _ := f.Uint("llama.block_count")
	tokens, _ := f.Strings("tokenizer.ggml.tokens")
	t, raw, err := f.TensorByName("output.weight")
	if err != nil {
		log.Fatal(err)
	}
	row := make([]float32, t.RowLen())
	if err := quant.Dequantize(t.Type, raw[:t.Type.RowBytes(len(row))], row); err != nil {
		log.Fatal(err)
	}
	fmt.Println(n, tokens, t.Dims, t.Type, t.Rows(), row[32/2])
	// Output: 2 [<s> </s> hi] [32 2] Q8_0 2 0.25177002
}
