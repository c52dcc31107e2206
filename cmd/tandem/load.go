package main

import (
	"errors"
	"fmt"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/backends"
	"github.com/tandemserve/tandem/kernels/comm"
	"github.com/tandemserve/tandem/kernels/cuda"
	"github.com/tandemserve/tandem/model"
)

// maxTP bounds --tp: each rank is a backend with its own threads or device.
const maxTP = 64

// loadModel opens the model at path on the named backend. With tp > 1 it
// splits the model tensor-parallel over tp backends of that kind (CPU ranks
// share opts.Threads between them; GPU ranks take devices 0..tp-1) joined by
// a communicator (see communicators). It returns the backend's name and a
// function that releases everything.
func loadModel(path, backend string, opts backends.Options, tp int) (*model.Model, string, func(), error) {
	if tp < 1 || tp > maxTP {
		return nil, "", nil, fmt.Errorf("--tp must be in [1, %d], got %d", maxTP, tp)
	}
	if tp == 1 {
		be, err := backends.Open(backend, opts)
		if err != nil {
			return nil, "", nil, err
		}
		m, err := model.Open(path, be)
		if err != nil {
			be.Close()
			return nil, "", nil, err
		}
		return m, be.Name(), func() { m.Close(); be.Close() }, nil
	}
	if opts.Threads > 0 {
		opts.Threads = max(1, opts.Threads/tp)
	}
	var bes []kernels.Backend
	closeBackends := func() {
		for _, b := range bes {
			b.Close()
		}
	}
	for r := 0; r < tp; r++ {
		o := opts
		o.Device = r
		be, err := backends.Open(backend, o)
		if err != nil {
			closeBackends()
			return nil, "", nil, fmt.Errorf("tensor-parallel rank %d: %w", r, err)
		}
		bes = append(bes, be)
	}
	comms, err := communicators(bes)
	if err != nil {
		closeBackends()
		return nil, "", nil, err
	}
	closeComms := func() {
		var errs []error
		for _, c := range comms {
			errs = append(errs, c.Close())
		}
		_ = errors.Join(errs...)
	}
	m, err := model.OpenTP(path, bes, comms)
	if err != nil {
		closeComms()
		closeBackends()
		return nil, "", nil, err
	}
	name := fmt.Sprintf("%s x%d (tensor-parallel)", bes[0].Name(), tp)
	return m, name, func() { m.Close(); closeComms(); closeBackends() }, nil
}

// communicators joins tensor-parallel ranks: NCCL when every rank is a CUDA
// backend on its own device and NCCL loads, else the in-process
// communicator, which stages through host memory and works for any backend
// (several ranks on one GPU included).
func communicators(bes []kernels.Backend) ([]comm.Communicator, error) {
	var gpus []*cuda.Backend
	devices := map[int]bool{}
	for _, b := range bes {
		g, ok := b.(*cuda.Backend)
		if !ok || devices[g.Device().Index] {
			return comm.NewGroup(bes)
		}
		devices[g.Device().Index] = true
		gpus = append(gpus, g)
	}
	if cs, err := comm.NewNCCL(gpus); err == nil {
		return cs, nil
	}
	return comm.NewGroup(bes)
}
