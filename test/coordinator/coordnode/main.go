// Command coordnode runs one coordinator exactly like `tandem coordinator`, for the multi-process
// tests in test/coordinator: it depends on nothing but the coordinator packages, so those tests
// build and run whatever state the rest of cmd/tandem is in.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tandemserve/tandem/coordinator/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, daemon.ErrUsage) {
			fmt.Fprintln(os.Stderr, "coordnode:", err)
		}
		os.Exit(1)
	}
}
