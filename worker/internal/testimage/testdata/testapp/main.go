// Command testapp is the program inside skiff's test images. Its arguments
// are a little script of steps run in order, for example
//
//	testapp out hello err world exit 3
//	testapp trap-term 42 serve 127.0.0.1:8080 sleep 1h
//	testapp ns            (prints the ipc, uts and net namespace links)
//	testapp timerslack    (prints its timer slack in ns)
//	testapp alloc 32 spin 1h   (holds 32 MiB, then burns CPU for an hour)
//
// It is built statically (CGO_ENABLED=0) by the testimage package.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	args := os.Args[1:]
	next := func() string {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, "testapp: missing argument")
			os.Exit(100)
		}
		a := args[0]
		args = args[1:]
		return a
	}
	for len(args) > 0 {
		switch cmd := next(); cmd {
		case "out":
			fmt.Println(next())
		case "err":
			fmt.Fprintln(os.Stderr, next())
		case "exit":
			n, _ := strconv.Atoi(next())
			os.Exit(n)
		case "sleep":
			d, err := time.ParseDuration(next())
			if err != nil {
				fail(err)
			}
			time.Sleep(d)
		case "lines":
			n, _ := strconv.Atoi(next())
			for i := range n {
				fmt.Printf("line %06d %s\n", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
			}
		case "alloc":
			// MiB of memory it touches and keeps (anonymous, resident:
			// the cgroup's working set).
			n, _ := strconv.Atoi(next())
			for range n {
				b := make([]byte, 1<<20)
				for i := range b {
					b[i] = 1
				}
				held = append(held, b)
			}
			fmt.Println("allocated", n, "MiB")
		case "spin":
			// Burns CPU on one thread until the duration passes.
			d, err := time.ParseDuration(next())
			if err != nil {
				fail(err)
			}
			for end := time.Now().Add(d); time.Now().Before(end); {
				for i := 0; i < 1e6; i++ {
					spun++
				}
			}
		case "oom":
			var hog [][]byte
			for {
				b := make([]byte, 1<<20)
				for i := range b {
					b[i] = 1
				}
				hog = append(hog, b)
			}
		case "trap-term":
			code, _ := strconv.Atoi(next())
			ch := make(chan os.Signal, 1)
			signal.Notify(ch, syscall.SIGTERM)
			go func() {
				<-ch
				fmt.Println("got SIGTERM")
				os.Exit(code)
			}()
		case "ignore-term":
			signal.Ignore(syscall.SIGTERM)
		case "serve":
			ln, err := net.Listen("tcp", next())
			if err != nil {
				fail(err)
			}
			fmt.Println("listening on", ln.Addr())
			go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h, _ := os.Hostname()
				fmt.Fprintf(w, "hello from %s\n", h)
			}))
		case "get":
			get(next())
		case "get-once":
			c := http.Client{Timeout: 2 * time.Second}
			resp, err := c.Get(next())
			if err != nil {
				fail(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Print(string(body))
		case "env":
			env := os.Environ()
			slices.Sort(env)
			for _, e := range env {
				fmt.Println(e)
			}
		case "id":
			groups, _ := os.Getgroups()
			fmt.Printf("uid=%d gid=%d groups=%v\n", os.Getuid(), os.Getgid(), groups)
		case "pid":
			fmt.Printf("pid=%d\n", os.Getpid())
		case "ns":
			// One line per namespace, "ipc:[4026531839]": equal links
			// mean a shared namespace.
			for _, ns := range []string{"ipc", "uts", "net"} {
				l, err := os.Readlink("/proc/self/ns/" + ns)
				if err != nil {
					fail(err)
				}
				fmt.Println(l)
			}
		case "pwd":
			wd, _ := os.Getwd()
			fmt.Println(wd)
		case "hostname":
			h, _ := os.Hostname()
			fmt.Println(h)
		case "tty":
			fmt.Printf("tty=%v\n", isTerminal(0) && isTerminal(1))
		case "winsize":
			var ws struct{ Row, Col, X, Y uint16 }
			syscall.Syscall(syscall.SYS_IOCTL, 1, syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws)))
			fmt.Printf("size=%dx%d\n", ws.Col, ws.Row)
		case "timerslack":
			// The calling thread's, which every thread of the program
			// inherited from the one that started it.
			slack, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_GET_TIMERSLACK, 0, 0)
			if errno != 0 {
				fail(errno)
			}
			fmt.Printf("timerslack=%d\n", slack)
		case "cat":
			b, err := os.ReadFile(next())
			if err != nil {
				fail(err)
			}
			os.Stdout.Write(b)
		case "write":
			f, t := next(), next()
			if err := os.WriteFile(f, []byte(t), 0o644); err != nil {
				fail(err)
			}
		case "stdin":
			io.Copy(os.Stdout, os.Stdin)
		default:
			fail(fmt.Errorf("unknown step %q", cmd))
		}
	}
}

// held and spun keep alloc's memory and spin's loop from being optimized
// away.
var (
	held [][]byte
	spun int
)

func get(url string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Print(string(body))
			return
		}
		if time.Now().After(deadline) {
			fail(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func isTerminal(fd int) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "testapp:", err)
	os.Exit(101)
}
