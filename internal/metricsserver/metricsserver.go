// Package metricsserver serves a Prometheus handler at /metrics on an address of its own,
// for the daemons whose metrics have no other listener (hostd, netcfg).
package metricsserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Serve listens on addr and serves h at /metrics until ctx ends. It returns once the
// listener is bound (an error names only what failed: callers say which setting it was).
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics", "listen", ln.Addr().String())
	return nil
}
