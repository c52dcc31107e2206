// Package e2e holds Tandem's multi-process end-to-end tests. They start the
// real tandem binary ($TANDEM_BIN) on loopback with the default model
// ($TANDEM_MODEL) and talk to it as a client would; they build only with the
// e2e tag (make test-e2e) and skip with a message when the binary or the
// model is missing.
package e2e
