package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestOperatorCLI drives the operator commands against real masters the way
// a person would: watch, describe, leadership transfer, apply -f DIR (and
// -R), delete -f FILE, a snapshot saved from one cluster and restored onto
// a fresh three-master cluster through a follower, delete, and remove-peer
// of a stopped master.
func TestOperatorCLI(t *testing.T) {
	c := startCluster(t, 3)
	c.waitLeader(60 * time.Second)
	run := func(stdin string, args ...string) string {
		t.Helper()
		return c.mustCLI(t, stdin, args...)
	}

	// get -w prints the list, then every change.
	var watchOut syncBuffer
	watch := exec.Command(skiffBin, append(append([]string{"--server", strings.Join(c.apiAddrs(), ",")}, c.securityArgs()...), "get", "configmaps", "-n", "default", "-w")...)
	watch.Stdout, watch.Stderr = &watchOut, &watchOut
	watch.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(t.TempDir(), "none.yaml"))
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill(); watch.Wait() })
	eventually(t, 10*time.Second, func() error {
		if !strings.Contains(watchOut.String(), "No configmaps found") {
			return fmt.Errorf("watch output so far: %q", watchOut.String())
		}
		return nil
	})
	run(`
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, labels: {tier: web}}
data: {color: blue}
`, "apply", "-f", "-")
	eventually(t, 10*time.Second, func() error {
		if !strings.Contains(watchOut.String(), "settings") {
			return fmt.Errorf("watch did not show the new configmap: %q", watchOut.String())
		}
		return nil
	})
	// Interrupt ends the watch cleanly.
	watch.Process.Signal(syscall.SIGINT)
	if err := watch.Wait(); err != nil {
		t.Errorf("get -w after Ctrl-C: %v\n%s", err, watchOut.String())
	}

	out := run("", "describe", "configmap/settings")
	for _, want := range []string{"Name:", "settings", "Labels:", "tier=web", "Data:", "color: blue", "Events:"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}

	// Leadership moves where it is asked to.
	out = run("", "cluster", "transfer-leadership", "--to", "m2")
	if !strings.Contains(out, "m2") {
		t.Errorf("transfer-leadership --to m2: %s", out)
	}
	if l := c.waitLeader(10 * time.Second); l.name != "m2" {
		t.Errorf("leader after transfer is %s, want m2", l.name)
	}

	// apply -f DIR takes the directory's manifests (not its
	// subdirectories, nor files of other types); -R takes those too.
	dir := t.TempDir()
	opWriteFile(t, filepath.Join(dir, "a.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dir-a}\ndata: {file: a}\n")
	opWriteFile(t, filepath.Join(dir, "b.yml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dir-b}\ndata: {file: b}\n")
	opWriteFile(t, filepath.Join(dir, "notes.txt"), "not a manifest: apply skips it\n")
	opWriteFile(t, filepath.Join(dir, "nested", "c.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dir-c}\ndata: {file: c}\n")
	out = run("", "apply", "-f", dir)
	if out != "configmap/dir-a created\nconfigmap/dir-b created\n" {
		t.Errorf("apply -f DIR: want dir-a and dir-b created, nothing else:\n%s", out)
	}
	if out, err := c.cli("", "get", "configmap", "dir-c"); err == nil {
		t.Errorf("apply -f DIR without -R applied a subdirectory's manifest:\n%s", out)
	}
	out = run("", "apply", "-R", "-f", dir)
	if out != "configmap/dir-a unchanged\nconfigmap/dir-b unchanged\nconfigmap/dir-c created\n" {
		t.Errorf("apply -R -f DIR: want dir-a and dir-b unchanged, dir-c created:\n%s", out)
	}
	// Output for scripts, as kubectl's: -o jsonpath, -o custom-columns,
	// --sort-by, label columns.
	if out := run("", "get", "configmaps", "-o", "jsonpath={.items[*].metadata.name}", "--sort-by", ".data.file"); out != "settings dir-a dir-b dir-c" {
		t.Errorf("get -o jsonpath --sort-by .data.file (settings has no file): %q", out)
	}
	if out := run("", "get", "configmap", "settings", "-o", "jsonpath={.data.color}"); out != "blue" {
		t.Errorf("get one object -o jsonpath: %q", out)
	}
	out = run("", "get", "configmaps", "-o", "custom-columns=NAME:.metadata.name,FILE:.data.file", "--sort-by", "{.metadata.name}")
	if !regexp.MustCompile(`^NAME +FILE\ndir-a +a\ndir-b +b\ndir-c +c\nsettings +<none>\n$`).MatchString(out) {
		t.Errorf("get -o custom-columns:\n%s", out)
	}
	out = run("", "get", "configmap", "settings", "-L", "tier", "--show-labels")
	if !regexp.MustCompile(`NAME +DATA +AGE +TIER +LABELS\nsettings +1 +\S+ +web +tier=web\n`).MatchString(out) {
		t.Errorf("get -L tier --show-labels:\n%s", out)
	}
	if out, err := c.cli("", "get", "configmaps", "-o", "jsonpath={.items[*"); err == nil || !strings.Contains(out, "unterminated array") {
		t.Errorf("a bad template: want an error naming it, got (err %v) %s", err, out)
	}

	// The kinds, as kubectl api-resources lists them.
	if out := run("", "api-resources", "--namespaced=false"); !regexp.MustCompile(`(?m)^nodes +no +v1 +false +Node$`).MatchString(out) || strings.Contains(out, "Deployment") {
		t.Errorf("api-resources --namespaced=false:\n%s", out)
	}

	// delete -f FILE deletes what the file names, and only that.
	out = run("", "delete", "-f", filepath.Join(dir, "a.yaml"))
	if out != "configmap/dir-a deleted\n" {
		t.Errorf("delete -f a.yaml: %s", out)
	}
	if out, err := c.cli("", "get", "configmap", "dir-a"); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("get after delete -f: want not found, got (err %v) %s", err, out)
	}
	if out := run("", "get", "configmap", "dir-b", "-o", "name"); !strings.Contains(out, "dir-b") {
		t.Errorf("delete -f a.yaml touched dir-b: %s", out)
	}

	// Snapshot from this cluster, restore onto a fresh three-master
	// cluster through a follower: the follower forwards the upload to
	// the leader, and every master ends up with the restored state.
	snap := filepath.Join(t.TempDir(), "backup.snap")
	out = run("", "cluster", "snapshot", "save", snap)
	if !strings.Contains(out, "saved snapshot") {
		t.Errorf("snapshot save: %s", out)
	}
	fresh := startCluster(t, 3)
	freshLeader := fresh.waitLeader(60 * time.Second)
	if out, err := fresh.cli("", "get", "configmap", "settings"); err == nil {
		t.Fatalf("fresh cluster already has the configmap:\n%s", out)
	}
	var follower *master
	for _, m := range fresh.masters {
		if m != freshLeader {
			follower = m
			break
		}
	}
	if out, err := opCLIAt(fresh, []*master{follower}, "cluster", "snapshot", "restore", snap); err != nil || !strings.Contains(out, "restored") {
		t.Fatalf("snapshot restore through follower %s: %v\n%s", follower.name, err, out)
	}
	for _, m := range fresh.masters {
		eventually(t, 20*time.Second, func() error {
			for _, want := range []string{"settings", "dir-b", "dir-c"} {
				out, err := opCLIAt(fresh, []*master{m}, "get", "configmap", want, "--stale", "-o", "yaml")
				if err != nil || !strings.Contains(out, "name: "+want) {
					return fmt.Errorf("%s (stale read) lacks restored configmap %s: %v\n%s", m.name, want, err, out)
				}
			}
			if out, err := opCLIAt(fresh, []*master{m}, "get", "configmap", "dir-a", "--stale"); err == nil || !strings.Contains(out, "not found") {
				return fmt.Errorf("%s serves dir-a, deleted before the snapshot: %v\n%s", m.name, err, out)
			}
			return nil
		})
	}
	out, err := fresh.cli("", "get", "configmap", "settings", "-o", "yaml")
	if err != nil || !strings.Contains(out, "color: blue") {
		t.Errorf("restored cluster lacks the configmap (err %v):\n%s", err, out)
	}
	// The restored cluster takes writes after the restored state.
	if out, err := fresh.cli("", "delete", "configmap", "settings"); err != nil || !strings.Contains(out, "configmap/settings deleted") {
		t.Errorf("delete on the restored cluster (err %v): %s", err, out)
	}

	// delete on the original cluster, then the object is gone.
	out = run("", "delete", "configmap", "settings")
	if !strings.Contains(out, "configmap/settings deleted") {
		t.Errorf("delete: %s", out)
	}
	if out, err := c.cli("", "get", "configmap", "settings"); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("get after delete: want not found, got (err %v) %s", err, out)
	}

	// remove-peer: a master that is gone for good (stopped, so it left
	// gossip) is taken out of the configuration from the CLI; two voters
	// remain and status warns about the even number.
	gone := c.masters[2]
	alive := c.masters[:2]
	c.stop(gone, 30*time.Second)
	if out, err := opCLIAt(c, alive, "cluster", "remove-peer", gone.name); err != nil || !strings.Contains(out, "removed "+gone.name) {
		t.Fatalf("cluster remove-peer %s: %v\n%s", gone.name, err, out)
	}
	out, err = opCLIAt(c, alive, "cluster", "status", "-o", "json")
	if err != nil {
		t.Fatalf("cluster status -o json: %v\n%s", err, out)
	}
	var st struct {
		Leader  string `json:"leader"`
		Warning string `json:"warning"`
		Servers []struct {
			Name  string `json:"name"`
			Voter bool   `json:"voter"`
		} `json:"servers"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cluster status -o json: %v\n%s", err, out)
	}
	var voters []string
	for _, s := range st.Servers {
		if s.Voter {
			voters = append(voters, s.Name)
		}
	}
	if len(voters) != 2 || slices.Contains(voters, gone.name) || st.Leader == "" {
		t.Errorf("after remove-peer %s: voters %v, leader %q, want the two others and a leader\n%s", gone.name, voters, st.Leader, out)
	}
	out, err = opCLIAt(c, alive, "cluster", "status")
	if err != nil || !strings.Contains(out, "Warning: 2 voters: an even number tolerates no more failures than 1 would") {
		t.Errorf("cluster status with two voters lacks the even-number warning (err %v):\n%s", err, out)
	}
	// The two remaining masters still take writes.
	if out, err := opCLIAt(c, alive, "delete", "configmap", "dir-b"); err != nil || !strings.Contains(out, "configmap/dir-b deleted") {
		t.Errorf("delete with two masters left (err %v): %s", err, out)
	}
}

// opCLIAt runs the CLI against the given masters only (--server lists just
// their API addresses).
func opCLIAt(c *cluster, ms []*master, args ...string) (string, error) {
	var addrs []string
	for _, m := range ms {
		addrs = append(addrs, m.apiAddr)
	}
	cmd := exec.Command(skiffBin, append(append([]string{"--server", strings.Join(addrs, ",")}, c.securityArgs()...), args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(c.t.TempDir(), "none.yaml"))
	err := cmd.Run()
	return out.String(), err
}

func opWriteFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
