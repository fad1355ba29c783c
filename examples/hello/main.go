// Command hello is the demo workload of `make run`: a static program that
// prints a greeting, then serves it over HTTP with a /healthz endpoint for
// probes. `skiff dev --demo-binary` packs it into an OCI image and serves it
// from a registry on loopback, so the demo needs no internet.
//
// Environment: GREETING (default "hello"), PORT (default 8080).
//
// The image holds nothing but this program, so it also has small commands
// for `skiff exec`: `hello env` prints the environment, `hello get URL`
// prints a URL's body (try http://127.0.0.1:8080/), `hello tty` tells
// whether it runs on a terminal and the terminal's size (try
// `skiff exec -it hello -- /hello tty`), and `hello spin [MiB]` holds
// that much memory (default 64) and burns CPU until stopped, for
// `skiff top` to show (give it a CPU limit).
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/term"
)

func main() {
	if len(os.Args) > 1 {
		os.Exit(command(os.Args[1:]))
	}
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello"
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	host, _ := os.Hostname()
	fmt.Printf("%s from %s\n", greeting, host)

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintf(w, "%s from %s\n", greeting, host)
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		fmt.Println("got SIGTERM, shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Printf("listening on :%s\n", port)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

func command(args []string) int {
	switch {
	case args[0] == "env":
		for _, e := range os.Environ() {
			fmt.Println(e)
		}
		return 0
	case args[0] == "get" && len(args) == 2:
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer resp.Body.Close()
		_, _ = io.Copy(os.Stdout, resp.Body)
		if resp.StatusCode >= 400 {
			return 1
		}
		return 0
	case args[0] == "cat" && len(args) > 1:
		for _, name := range args[1:] {
			b, err := os.ReadFile(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			_, _ = os.Stdout.Write(b)
		}
		return 0
	case args[0] == "spin" && len(args) <= 2:
		mib := 64
		if len(args) == 2 {
			n, err := strconv.Atoi(args[1])
			if err != nil || n < 0 {
				fmt.Fprintln(os.Stderr, "spin: MiB must be a number of mebibytes")
				return 2
			}
			mib = n
		}
		// Touched, so it is resident: the container's working set.
		held = make([]byte, mib<<20)
		for i := 0; i < len(held); i += 4096 {
			held[i] = 1
		}
		// As PID 1 of its container it gets no default action for
		// SIGTERM: exit on it.
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
		go func() {
			<-stop
			os.Exit(0)
		}()
		fmt.Printf("spinning with %d MiB\n", mib)
		for {
			spun++
		}
	case args[0] == "tty":
		// What `skiff exec -t` gave the command: a terminal on stdin and
		// stdout, and the size of the user's terminal.
		fmt.Printf("stdin-terminal=%t stdout-terminal=%t", term.IsTerminal(0), term.IsTerminal(1))
		if w, h, err := term.GetSize(1); err == nil {
			fmt.Printf(" size=%dx%d", w, h)
		}
		fmt.Println()
		return 0
	case args[0] == "tty-resize":
		// Prints the terminal's size, then its new size after the user's
		// terminal is resized (SIGWINCH), to show `skiff exec -it`
		// following a resize.
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		w, h, _ := term.GetSize(1)
		fmt.Printf("size=%dx%d\n", w, h)
		select {
		case <-winch:
			w, h, _ = term.GetSize(1)
			fmt.Printf("resized=%dx%d\n", w, h)
			return 0
		case <-time.After(30 * time.Second):
			fmt.Println("no resize within 30s")
			return 1
		}
	}
	fmt.Fprintln(os.Stderr, "usage: hello [env | get URL | cat FILE... | tty | tty-resize | spin [MiB]]")
	return 2
}

// held and spun are spin's memory and counter, kept where the compiler
// cannot drop them.
var (
	held []byte
	spun uint64
)
