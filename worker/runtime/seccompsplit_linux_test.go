//go:build cgo && seccomp

package runtime

import (
	"encoding/binary"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// Audit architectures (linux/audit.h) the filters check.
const (
	auditArchX86_64  = 0xc000003e
	auditArchI386    = 0x40000003
	auditArchAarch64 = 0xc00000b7 // not in the profile: its bad-architecture answer
)

// compiled is a filter as the kernel runs it.
type compiled struct{ vm *bpf.VM }

func compileForTest(t *testing.T, cfg *configs.Seccomp) compiled {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := shim.CompileFilter([]string{exe, shim.Subcommand}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := shim.DecodeProgram(b)
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]bpf.RawInstruction, len(prog))
	for i, in := range prog {
		raw[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("filter does not disassemble")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	return compiled{vm}
}

// run answers a system call as the kernel's filter would (struct
// seccomp_data; the VM loads words big-endian, the kernel in the host's
// order, so each word is laid out for the VM).
func (c compiled) run(t *testing.T, arch, nr uint32, args [6]uint64) uint32 {
	var d [64]byte
	be := binary.BigEndian.PutUint32
	be(d[0:], nr)
	be(d[4:], arch)
	for i, a := range args {
		be(d[16+8*i:], uint32(a))       // low half first on little-endian hosts
		be(d[16+8*i+4:], uint32(a>>32)) // high half
	}
	r, err := c.vm.Run(d[:])
	if err != nil {
		t.Fatal(err)
	}
	return uint32(r)
}

// combined is the kernel's answer for a process with several filters: the
// strictest action, the newest filter's on a tie (seccomp_run_filters).
func combined(newestFirst ...uint32) uint32 {
	ret := uint32(unix.SECCOMP_RET_ALLOW)
	for _, r := range newestFirst {
		if int32(r&unix.SECCOMP_RET_ACTION_FULL) < int32(ret&unix.SECCOMP_RET_ACTION_FULL) {
			ret = r
		}
	}
	return ret
}

// The split filter gives every system call, through every ABI, the answer
// the profile's own filter gives: each number up to past the last one the
// kernel knows, the x32 numbers, and, for the calls with conditional rules,
// the arguments around each condition.
func TestSeccompSplitEquivalent(t *testing.T) {
	if goruntime.GOARCH != "amd64" {
		t.Logf("the ABIs checked here are amd64's; nothing to check on %s", goruntime.GOARCH)
		return
	}
	sysAdmin := append(slices.Clone(defaultCapabilities), "CAP_SYS_ADMIN")
	for _, tc := range []struct {
		name  string
		caps  []string
		noX32 bool
	}{
		{"default", defaultCapabilities, true},
		{"default-x32", defaultCapabilities, false},
		{"sys-admin", sysAdmin, true},
		{"none", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd := &shim.SeccompDefault{Caps: tc.caps, NoX32: tc.noX32}
			full, err := sd.Config()
			if err != nil {
				t.Fatal(err)
			}
			pre, post, err := sd.Split()
			if err != nil {
				t.Fatal(err)
			}
			if len(post.Syscalls) > 32 {
				t.Errorf("second part has %d rules: libcontainer would build it as a binary tree, the cost the split avoids", len(post.Syscalls))
			}
			d, p, g := compileForTest(t, full), compileForTest(t, pre), compileForTest(t, post)

			vectors := argVectors(full)
			conditional := conditionalNumbers(t, full)
			mismatches := 0
			check := func(arch, nr uint32) {
				vs := vectors[:1]
				if conditional[[2]uint32{arch, nr}] {
					vs = vectors
				}
				for _, args := range vs {
					want := d.run(t, arch, nr, args)
					got := combined(g.run(t, arch, nr, args), p.run(t, arch, nr, args))
					if got != want && mismatches < 10 {
						mismatches++
						t.Errorf("arch %#x nr %d args %x: split answers %#x, the profile %#x", arch, nr, args, got, want)
					}
				}
			}
			for nr := uint32(0); nr < 1024; nr++ {
				for _, arch := range []uint32{auditArchX86_64, auditArchI386, auditArchAarch64} {
					check(arch, nr)
				}
				check(auditArchX86_64, 0x40000000|nr) // x32
			}
			for _, nr := range []uint32{0xffffffff, 0x7fffffff, 0x40000000 | 0x3fffffff} {
				check(auditArchX86_64, nr)
				check(auditArchI386, nr)
			}

			// The split does what it is for: the start's own calls pass
			// the first part, and the second refuses them as the profile
			// does.
			mount := uint32(unix.SYS_MOUNT)
			if !slices.Contains(tc.caps, "CAP_SYS_ADMIN") {
				if r := p.run(t, auditArchX86_64, mount, [6]uint64{}); r != unix.SECCOMP_RET_ALLOW {
					t.Errorf("first part answers mount %#x, want it allowed for the start", r)
				}
				if r, want := g.run(t, auditArchX86_64, mount, [6]uint64{}), d.run(t, auditArchX86_64, mount, [6]uint64{}); r != want || r == unix.SECCOMP_RET_ALLOW {
					t.Errorf("second part answers mount %#x, want the profile's refusal %#x", r, want)
				}
			}
		})
	}
}

// A profile with a conditional rule for a call of the start's is not split
// (its containers' inits compile the whole filter, as before): with every
// capability, bpf is allowed for some commands only.
func TestSeccompSplitRefused(t *testing.T) {
	_, _, err := (&shim.SeccompDefault{Caps: allCapabilities()}).Split()
	if err == nil || !strings.Contains(err.Error(), "conditional") {
		t.Errorf("split with every capability: %v, want refused for a conditional rule", err)
	}
}

// argVectors are the arguments tried: none, then each value a condition
// compares with, its neighbours, and it with high bits set.
func argVectors(cfg *configs.Seccomp) [][6]uint64 {
	out := [][6]uint64{{}, {^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}}
	seen := map[[6]uint64]bool{}
	for _, r := range cfg.Syscalls {
		for _, a := range r.Args {
			for _, v := range []uint64{a.Value, a.Value + 1, a.Value - 1, a.Value | 1<<32, a.ValueTwo, a.Value | a.ValueTwo, ^a.Value} {
				var args [6]uint64
				args[a.Index] = v
				if !seen[args] {
					seen[args] = true
					out = append(out, args)
				}
			}
		}
	}
	return out
}

// conditionalNumbers are the (audit arch, number) pairs of the calls with
// conditional rules.
func conditionalNumbers(t *testing.T, cfg *configs.Seccomp) map[[2]uint32]bool {
	out := map[[2]uint32]bool{}
	arches := map[libseccomp.ScmpArch]uint32{libseccomp.ArchAMD64: auditArchX86_64, libseccomp.ArchX86: auditArchI386}
	for _, r := range cfg.Syscalls {
		if len(r.Args) == 0 {
			continue
		}
		for arch, audit := range arches {
			if n, err := libseccomp.GetSyscallFromNameByArch(r.Name, arch); err == nil && n >= 0 {
				out[[2]uint32{audit, uint32(n)}] = true
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no conditional rules found: the profile changed, and so must this test")
	}
	return out
}

// A container and an exec into it start under the split filter, and get
// the profile's answers: what its init does (mounts, namespaces, the
// hostname, the keyring) stays refused to the program, clone3 answers
// ENOSYS, and a call only the first part refuses (a personality outside
// the profile's) is refused: the exec got the first part too.
func TestSeccompSplitContainer(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-sec-split", SandboxOptions{})
	steps := []string{"filters", "mount", "unshare", "sethostname", "keyctl", "clone3", "personality"}
	want := map[string]string{
		"filters": "2", "mount": "operation not permitted", "unshare": "operation not permitted", "personality": "operation not permitted",
		"sethostname": "operation not permitted", "keyctl": "operation not permitted", "clone3": "function not implemented",
	}
	mounts := []Mount{{HostPath: probeBinary(t), ContainerPath: "/probe", ReadOnly: true}}
	id, err := e.rt.StartContainer(ctxFor(t, 60*time.Second), sb, ContainerSpec{Image: fix.img, Mounts: mounts,
		Container: &pb.Container{Name: "split", Image: fix.ref, Command: append(append([]string{"/probe"}, steps...), "wait")}})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := e.rt.readRecord(id)
	if err != nil {
		t.Fatal(err)
	}
	if rec.SeccompDefault == nil || rec.SeccompDefault.Program == "" {
		t.Fatalf("container started without a split filter: %+v", rec.SeccompDefault)
	}
	if filepath.Dir(rec.SeccompDefault.Program) != filepath.Join(e.rt.cfg.StateDir, "seccomp") {
		t.Errorf("program at %s, want it in the runtime's state dir", rec.SeccompDefault.Program)
	}
	last := "stdout: " + steps[len(steps)-1] + ":"
	eventually(t, 60*time.Second, "the probe's last step", func() bool {
		return slices.ContainsFunc(e.logs(t, id), func(l string) bool { return strings.HasPrefix(l, last) })
	})
	got := procStatus(e.logs(t, id))
	for _, s := range steps {
		if got[s] != want[s] {
			t.Errorf("container %s: %q, want %q", s, got[s], want[s])
		}
	}

	var out strings.Builder
	code, err := e.rt.Exec(ctxFor(t, 60*time.Second), id, append([]string{"/probe"}, steps...), ExecIO{Stdout: &out}, false)
	if err != nil || code != 0 {
		t.Fatalf("exec = %d, %v; output %q", code, err, out.String())
	}
	got = procStatus(strings.Split(out.String(), "\n"))
	for _, s := range steps {
		if got[s] != want[s] {
			t.Errorf("exec %s: %q, want %q", s, got[s], want[s])
		}
	}
}
