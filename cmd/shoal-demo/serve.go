package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// newHandler returns the whoami routes. exit is called with the code
// requested by GET /exit?code=N once the reply has been written.
func newHandler(exit func(code int)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, collect(r).text())
	})
	mux.HandleFunc("GET /json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(collect(r))
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /exit", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.URL.Query().Get("code"))
		if err != nil || code < 0 || code > 255 {
			http.Error(w, "want /exit?code=N with 0 <= N <= 255", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "exiting with code %d\n", code)
		exit(code)
	})
	return mux
}

// exitCode is returned by serve when GET /exit asked for one.
type exitCode int

func (e exitCode) Error() string { return "exit " + strconv.Itoa(int(e)) }

// serve runs the whoami server until SIGTERM/SIGINT (returns nil) or a
// GET /exit request, after which the process exits with the asked code.
func serve(addr string, log io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	exitReq := make(chan int, 1)
	srv := &http.Server{
		Handler: newHandler(func(code int) {
			select {
			case exitReq <- code:
			default:
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "shoal-demo: serving on %s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	code := -1
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		fmt.Fprintln(log, "shoal-demo: signal received, shutting down")
	case code = <-exitReq:
		fmt.Fprintf(log, "shoal-demo: exit requested with code %d\n", code)
	}
	// Shutdown waits for in-flight requests, so the /exit reply gets out.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if code >= 0 {
		return exitCode(code)
	}
	return nil
}
