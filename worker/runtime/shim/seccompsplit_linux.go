package shim

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"
)

// A container's default seccomp filter in two parts (a "split" filter).
//
// libcontainer compiles a container's filter with libseccomp in the
// container's init, for every container start: for Docker's profile with
// the x86_64 and i386 ABIs that is about 25 ms of CPU, a quarter of a pod
// start's CPU on a busy node, the same work every time. The worker instead
// compiles it once per profile, with libcontainer's own code, and the
// container starts under two filters whose combined answer is the
// profile's, call by call:
//
//   - pre, compiled once and loaded on the thread that starts the
//     container (RunUnder), so the init and everything it starts inherit
//     it: the profile, plus the calls the start itself makes that the
//     profile refuses (setupSyscalls: mounts, pivot_root, namespaces, the
//     keyring ...);
//   - post, libcontainer's filter for the container, loaded by its init
//     just before the container's program as always: only those calls,
//     refused the way the profile refuses them. A handful of rules: no
//     binary tree, a tenth of a millisecond to compile.
//
// The kernel runs every filter of a process and takes the strictest answer
// (for answers of the same kind, the newest filter's), so a call the
// profile allows passes both; a setup call passes pre and gets the
// profile's refusal from post; any other call gets the profile's answer
// from pre. TestSeccompSplitEquivalent checks that answer for every system
// call number of every ABI against the profile's own filter.
//
// Processes exec'd into the container later start the same way (the
// runtime loads pre on the thread that starts them), since libcontainer
// gives them the container's filter, post.

// setupSyscalls are the system calls libcontainer makes while it starts a
// container or an exec, before the container's filter is complete, that
// Docker's profile may refuse: from the launching thread (cgroup v2
// device filters: bpf) through nsexec (setns, unshare) to the init
// (mounts with the old and the new API, pivot_root, the hostname, the
// session keyring, device nodes' modes: fchmodat2). clone3 is there
// because the profile answers it ENOSYS (so that glibc falls back to
// clone) and Go's exec does not fall back. Calls the profile allows (all
// of them with CAP_SYS_ADMIN) stay as they are.
var setupSyscalls = []string{
	"mount", "umount", "umount2", "pivot_root", "chroot",
	"fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr",
	"setns", "unshare", "sethostname", "setdomainname",
	"keyctl", "add_key", "request_key",
	"fchmodat2", "clone3", "bpf",
}

// Split returns the two parts of the profile's filter (see above). It
// fails for a profile the split cannot reproduce exactly: a setup call
// with a conditional rule, or one numbered past the profile's last call
// (libcontainer answers calls past the last one ENOSYS, and adding it to
// pre would move that line).
func (d *SeccompDefault) Split() (pre, post *configs.Seccomp, err error) {
	return d.split(true)
}

// split is Split; check=false leaves out the check against the profile's
// last call (a third of a millisecond): the shim, which needs only post,
// starts under a pre the worker checked when it compiled it.
func (d *SeccompDefault) split(check bool) (pre, post *configs.Seccomp, err error) {
	full, err := d.Config()
	if err != nil {
		return nil, nil, err
	}
	if full.DefaultAction != configs.Errno {
		return nil, nil, fmt.Errorf("split seccomp filter: default action %v, want errno", full.DefaultAction)
	}
	pre = &configs.Seccomp{
		DefaultAction:   full.DefaultAction,
		DefaultErrnoRet: full.DefaultErrnoRet,
		Architectures:   full.Architectures,
		Flags:           full.Flags,
	}
	post = &configs.Seccomp{
		DefaultAction: configs.Allow,
		Architectures: full.Architectures,
		Flags:         full.Flags,
	}
	moved := map[string]*configs.Syscall{}
	for _, name := range setupSyscalls {
		var rule *configs.Syscall
		for _, r := range full.Syscalls {
			if r.Name != name {
				continue
			}
			if len(r.Args) > 0 || rule != nil {
				return nil, nil, fmt.Errorf("split seccomp filter: %s has conditional rules", name)
			}
			rule = r
		}
		switch {
		case rule == nil:
			// Refused by the default action.
			moved[name] = &configs.Syscall{Name: name, Action: full.DefaultAction, ErrnoRet: full.DefaultErrnoRet}
		case rule.Action != configs.Allow:
			moved[name] = &configs.Syscall{Name: name, Action: rule.Action, ErrnoRet: rule.ErrnoRet}
		}
	}
	if check {
		if err := withinProfile(full, moved); err != nil {
			return nil, nil, err
		}
	}
	for _, r := range full.Syscalls {
		if moved[r.Name] == nil {
			pre.Syscalls = append(pre.Syscalls, r)
		}
	}
	for _, name := range setupSyscalls {
		if r := moved[name]; r != nil {
			pre.Syscalls = append(pre.Syscalls, &configs.Syscall{Name: name, Action: configs.Allow})
			post.Syscalls = append(post.Syscalls, r)
		}
	}
	return pre, post, nil
}

// ProgramExt is the extension of a compiled filter's file, which is named
// by the SHA-256 of its content.
const ProgramExt = ".bpf"

// WriteProgram stores a compiled filter in dir under its content's hash
// and returns the file's path.
func WriteProgram(dir string, prog []byte) (string, error) {
	sum := sha256.Sum256(prog)
	path := filepath.Join(dir, hex.EncodeToString(sum[:])+ProgramExt)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// A name of its own: starts of the same profile may write it at once.
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(prog)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", err
	}
	return path, nil
}

// ReadProgram loads a filter written by WriteProgram, checking it against
// its name.
func ReadProgram(path string) ([]unix.SockFilter, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seccomp program: %w", err)
	}
	sum := sha256.Sum256(b)
	if want := strings.TrimSuffix(filepath.Base(path), ProgramExt); hex.EncodeToString(sum[:]) != want {
		return nil, fmt.Errorf("seccomp program %s: content does not match its name", path)
	}
	return DecodeProgram(b)
}

// DecodeProgram decodes a classic BPF program in the kernel's layout
// (struct sock_filter, native byte order).
func DecodeProgram(b []byte) ([]unix.SockFilter, error) {
	const size = int(unsafe.Sizeof(unix.SockFilter{}))
	if len(b) == 0 || len(b)%size != 0 || len(b)/size > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp program: %d bytes is not a program", len(b))
	}
	prog := make([]unix.SockFilter, len(b)/size)
	if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, prog); err != nil {
		return nil, err
	}
	return prog, nil
}

// RunUnder runs f on a thread of its own with the seccomp filter prog
// loaded on that thread only, and ends the thread afterwards. Processes
// that f starts inherit the filter; the rest of the process never has it.
func RunUnder(prog []unix.SockFilter, f func() error) error {
	if len(prog) == 0 {
		return errors.New("seccomp program is empty")
	}
	done := make(chan error, 1)
	go runUnder(prog, f, done)
	return <-done
}

func runUnder(prog []unix.SockFilter, f func() error, done chan<- error) {
	// Never unlocked: the thread ends with this goroutine, and the filter
	// with it. Threads the runtime starts meanwhile come from its template
	// thread, not from this one.
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread does not end with its goroutine: the runtime
		// parks it, and the process would show the filter for good. Hold
		// it while another goroutine, which cannot run here, does the work.
		inner := make(chan error, 1)
		go runUnder(prog, f, inner)
		err := <-inner
		runtime.UnlockOSThread()
		done <- err
		return
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// Without TSYNC: this thread only. Allowed without no_new_privs to a
	// thread with CAP_SYS_ADMIN.
	if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		done <- fmt.Errorf("load seccomp filter: %w", errno)
		return
	}
	runtime.KeepAlive(prog)
	done <- f()
}

// CompileArg, after Subcommand, makes the shim compile a seccomp filter
// (libcontainer's configs.Seccomp as JSON on stdin) and load it on one of
// its threads, whose ID it then prints, for CompileFilter to read back.
const CompileArg = "--compile-seccomp"

// compileTimeout bounds CompileFilter's helper.
var compileTimeout = 10 * time.Second

// CompileFilter compiles cfg exactly as libcontainer does in a container's
// init, in a process started from shimCommand (the shim's binary and
// Subcommand), and reads the program back from the kernel
// (PTRACE_SECCOMP_GET_FILTER, which needs CAP_SYS_ADMIN). It returns the
// program in the kernel's layout (DecodeProgram).
func CompileFilter(shimCommand []string, cfg *configs.Seccomp) ([]byte, error) {
	in, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	// ptrace requests must come from the thread that attached.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(shimCommand[0], append(slices.Clone(shimCommand[1:]), CompileArg)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("compile seccomp filter: %w", err)
	}
	// A helper that hangs must not hold every start of its profile.
	timer := time.AfterFunc(compileTimeout, func() { _ = cmd.Process.Kill() })
	waited := false
	wait := func() {
		timer.Stop()
		stdin.Close() // the helper exits on EOF
		_ = cmd.Wait()
		waited = true
	}
	defer func() {
		if !waited {
			wait()
		}
	}()
	fail := func(err error) ([]byte, error) {
		_ = cmd.Process.Kill()
		wait() // and its stderr is whole
		if s := strings.TrimSpace(stderr.String()); s != "" {
			err = fmt.Errorf("%w: %s", err, s)
		}
		return nil, fmt.Errorf("compile seccomp filter: %w", err)
	}
	if _, err := stdin.Write(append(in, '\n')); err != nil {
		return fail(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return fail(fmt.Errorf("helper: %w", err))
	}
	tid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return fail(fmt.Errorf("helper said %q", line))
	}
	if err := unix.PtraceSeize(tid); err != nil {
		return fail(fmt.Errorf("ptrace: %w", err))
	}
	prog, stopped, err := readFilter(tid)
	if !stopped || unix.PtraceDetach(tid) != nil {
		// A traced thread that exits waits for its tracer to reap it, and
		// the process for the thread: end the helper and reap the thread.
		_ = cmd.Process.Kill()
		for {
			var ws unix.WaitStatus
			if _, werr := unix.Wait4(tid, &ws, unix.WALL, nil); werr != nil || ws.Exited() || ws.Signaled() {
				break
			}
		}
		if err == nil {
			err = errors.New("could not let the helper go")
		}
	}
	if err != nil {
		return fail(err)
	}
	var out bytes.Buffer
	if err := binary.Write(&out, binary.NativeEndian, prog); err != nil {
		return fail(err)
	}
	return out.Bytes(), nil
}

// readFilter stops the seized thread tid and reads its seccomp filter.
// stopped says whether the thread is stopped (and can be detached).
func readFilter(tid int) (prog []unix.SockFilter, stopped bool, err error) {
	if err := unix.PtraceInterrupt(tid); err != nil {
		return nil, false, fmt.Errorf("ptrace: %w", err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(tid, &ws, unix.WALL, nil); err != nil || !ws.Stopped() {
		return nil, false, fmt.Errorf("helper did not stop: %v (%v)", err, ws)
	}
	n, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), 0, 0, 0, 0)
	if errno != 0 {
		return nil, true, fmt.Errorf("read the filter back: %w", errno)
	}
	if n == 0 {
		return nil, true, errors.New("helper has no filter")
	}
	prog = make([]unix.SockFilter, n)
	if _, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), 0, uintptr(unsafe.Pointer(&prog[0])), 0, 0); errno != 0 {
		return nil, true, fmt.Errorf("read the filter back: %w", errno)
	}
	return prog, true, nil
}

// compileMain is the helper's side of CompileFilter.
func compileMain() int {
	r := bufio.NewReader(os.Stdin)
	line, err := r.ReadBytes('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, "read the filter:", err)
		return 1
	}
	var cfg configs.Seccomp
	if err := json.Unmarshal(line, &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "decode the filter:", err)
		return 1
	}
	// libcontainer loads the filter on the calling thread only.
	runtime.LockOSThread()
	if _, err := seccomp.InitSeccomp(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(unix.Gettid())
	// Stay (on this thread) until the compiler has read the filter.
	_, _ = io.Copy(io.Discard, r)
	return 0
}

// seccompFilter puts the container's filter in rec.Config and returns how
// to start a process of the container: under the split filter's first
// part when rec names one (SeccompDefault.Program), directly otherwise.
// Execs into the container must start the same way (StartUnder).
func seccompFilter(rec *Record) (func(func() error) error, error) {
	d := rec.SeccompDefault
	if d == nil || rec.Config == nil {
		return direct, nil
	}
	if d.Program == "" {
		var err error
		rec.Config.Seccomp, err = d.Config()
		return direct, err
	}
	start, err := StartUnder(rec)
	if err != nil {
		return nil, err
	}
	if _, rec.Config.Seccomp, err = d.split(false); err != nil {
		return nil, err
	}
	return start, nil
}

// StartUnder returns how to start a process in rec's container so that it
// gets the container's whole filter: under the first part of a split
// filter (RunUnder) when the container has one, directly otherwise.
func StartUnder(rec *Record) (func(func() error) error, error) {
	if rec.SeccompDefault == nil || rec.SeccompDefault.Program == "" {
		return direct, nil
	}
	prog, err := ReadProgram(rec.SeccompDefault.Program)
	if err != nil {
		return nil, err
	}
	return func(f func() error) error { return RunUnder(prog, f) }, nil
}

func direct(f func() error) error { return f() }
