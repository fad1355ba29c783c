package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/bench/internal/objects"
	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// skiffMaster is one `skiff server` process.
type skiffMaster struct {
	*proc
	apiAddr, raftAddr, gossipAddr, httpAddr string
}

// skiffCluster is three (or n) masters started as real processes, the way
// e2e starts them.
type skiffCluster struct {
	env     *env
	bin     string
	dir     string
	masters []*skiffMaster
}

// startSkiff starts n masters with --bootstrap-expect n and waits until the
// leader serves writes.
func startSkiff(ctx context.Context, e *env, bin, label string, n int, extra []string) (_ *skiffCluster, retErr error) {
	dir, err := os.MkdirTemp(e.root, "skiff-"+label+"-")
	if err != nil {
		return nil, err
	}
	c := &skiffCluster{env: e, bin: bin, dir: dir}
	defer func() {
		if retErr != nil {
			c.close()
		}
	}()
	for i := 1; i <= n; i++ {
		m := &skiffMaster{}
		for _, a := range []*string{&m.raftAddr, &m.apiAddr, &m.gossipAddr, &m.httpAddr} {
			if *a, err = e.addr(); err != nil {
				return nil, err
			}
		}
		c.masters = append(c.masters, m)
	}
	var joins []string
	for _, m := range c.masters {
		joins = append(joins, m.gossipAddr)
	}
	for i, m := range c.masters {
		name := fmt.Sprintf("m%d", i+1)
		args := []string{"server", "--name", name, "--data-dir", filepath.Join(dir, name),
			"--raft-addr", m.raftAddr, "--api-addr", m.apiAddr, "--gossip-addr", m.gossipAddr,
			"--http-addr", m.httpAddr, "--bootstrap-expect", fmt.Sprint(n),
			"--join", strings.Join(joins, ","), "--log-level", "info", "--log-format", "json",
			// Capacity is measured, not policy: plaintext like the etcd
			// it is compared with, and no per-client rate limit.
			"--insecure", "--max-requests-per-second", "0"}
		args = append(args, extra...)
		m.proc = e.newProc(label+"-"+name, bin, args, filepath.Join(dir, name+".log"))
		if err := m.start(); err != nil {
			return nil, err
		}
	}
	if err := c.waitServing(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *skiffCluster) close() {
	for _, m := range c.masters {
		if m.proc != nil {
			m.kill()
		}
	}
	if !c.env.keep {
		os.RemoveAll(c.dir)
	}
}

func (c *skiffCluster) apiAddrs() []string {
	var out []string
	for _, m := range c.masters {
		out = append(out, m.apiAddr)
	}
	return out
}

// client returns a client over every master, starting with master first
// (the client sticks to the master that answered last, so rotating the
// list spreads clients over the masters as etcd's balancer does).
func (c *skiffCluster) client(first int) (*client.Client, error) {
	addrs := c.apiAddrs()
	first %= len(addrs)
	cfg := client.DefaultConfig()
	cfg.Servers = append(addrs[first:len(addrs):len(addrs)], addrs[:first]...)
	return client.New(cfg)
}

// only returns a client of one master.
func (c *skiffCluster) only(i int) (*client.Client, error) {
	cfg := client.DefaultConfig()
	cfg.Servers = []string{c.masters[i].apiAddr}
	return client.New(cfg)
}

// status asks the masters for the Raft status.
func (c *skiffCluster) status(ctx context.Context) (*pb.StatusResponse, error) {
	cl, err := c.client(0)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return cl.Status(ctx)
}

// leader returns the index of the leading master.
func (c *skiffCluster) leader(ctx context.Context) (int, error) {
	st, err := c.status(ctx)
	if err != nil {
		return -1, err
	}
	for i := range c.masters {
		if st.GetLeader() == fmt.Sprintf("m%d", i+1) {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no leader (status says %q)", st.GetLeader())
}

// waitServing waits until the masters agree on a leader, every master is a
// voter that has caught up, and a linearizable read of the default
// namespace (created by a new leader before it serves) succeeds.
func (c *skiffCluster) waitServing(ctx context.Context, within time.Duration) error {
	err := poll(ctx, within, 100*time.Millisecond, func() error {
		for _, m := range c.masters {
			if m.exited() {
				return fmt.Errorf("%s exited:\n%s", m.name, m.logTail(20))
			}
		}
		st, err := c.status(ctx)
		if err != nil {
			return err
		}
		if st.GetLeader() == "" {
			return errors.New("no leader yet")
		}
		if len(st.GetServers()) != len(c.masters) {
			return fmt.Errorf("%d servers in the raft configuration", len(st.GetServers()))
		}
		for _, s := range st.GetServers() {
			if s.GetState() != "Leader" && s.GetState() != "Follower" {
				return fmt.Errorf("%s is %s", s.GetName(), s.GetState())
			}
			if s.GetAppliedIndex()+1024 < st.GetCommitIndex() {
				return fmt.Errorf("%s applied %d of %d", s.GetName(), s.GetAppliedIndex(), st.GetCommitIndex())
			}
		}
		cl, err := c.client(0)
		if err != nil {
			return err
		}
		defer cl.Close()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err = cl.Get(rctx, "Namespace", "", "default", client.ReadOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("skiff cluster not serving: %w", err)
	}
	return nil
}

// supports reports whether `skiff server --help` mentions flag.
func supportsFlag(bin, flag string) bool {
	out, _ := exec.Command(bin, "server", "--help").CombinedOutput()
	return strings.Contains(string(out), "--"+flag+" ")
}

// skiffTarget writes 256-byte ConfigMaps through the gRPC API.
type skiffTarget struct {
	c         *skiffCluster
	namespace string
	// leaderOnly sends every client to the leader (no forwarding).
	leaderOnly bool
}

func (t *skiffTarget) name() string { return "skiff" }

func (t *skiffTarget) serverPIDs() []int {
	var out []int
	for _, m := range t.c.masters {
		out = append(out, m.pid())
	}
	return out
}

func (t *skiffTarget) newWriter(ctx context.Context, i int) (writer, error) {
	var cl *client.Client
	var err error
	if t.leaderOnly {
		l, lerr := t.c.leader(ctx)
		if lerr != nil {
			return nil, lerr
		}
		cl, err = t.c.client(l)
	} else {
		cl, err = t.c.client(i)
	}
	if err != nil {
		return nil, err
	}
	return &skiffWriter{cl: cl, ns: t.namespace}, nil
}

type skiffWriter struct {
	cl *client.Client
	ns string
}

func (w *skiffWriter) put(ctx context.Context, key string) error {
	o := objects.ConfigMap(w.ns, key, objects.PayloadBytes, map[string]string{groupLabel: keyGroup(key)})
	_, err := w.cl.Create(ctx, o)
	if status.Code(err) == codes.AlreadyExists {
		return fmt.Errorf("%w: %v", errExists, err)
	}
	return err
}

func (w *skiffWriter) close() { w.cl.Close() }

// groupLabel groups the written ConfigMaps by writer and 1,000 keys, so
// that they can be read back in lists that stay under the masters' message
// size limit.
const groupLabel = "bench-group"

// keyGroup maps "prefix-seq" to "prefix-(seq/1000)".
func keyGroup(key string) string {
	i := strings.LastIndex(key, "-")
	if i < 0 {
		return key
	}
	seq, err := strconv.Atoi(key[i+1:])
	if err != nil {
		return key
	}
	return fmt.Sprintf("%s-k%d", key[:i], seq/1000)
}

// missing returns the keys that are not stored: linearizable lists, one per
// group of keys.
func (t *skiffTarget) missing(ctx context.Context, keys []string) ([]string, error) {
	cl, err := t.c.client(0)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	groups := map[string]bool{}
	for _, k := range keys {
		groups[keyGroup(k)] = true
	}
	have := make(map[string]bool, len(keys))
	for g := range groups {
		lctx, cancel := context.WithTimeout(ctx, time.Minute)
		items, _, err := cl.List(lctx, "ConfigMap", client.ListOptions{Namespace: t.namespace, LabelSelector: groupLabel + "=" + g})
		cancel()
		if err != nil {
			return nil, err
		}
		for _, o := range items {
			have[o.Meta().GetName()] = true
		}
	}
	var out []string
	for _, k := range keys {
		if !have[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

// skiffFailover drives kills and transfers of a skiff cluster.
type skiffFailover struct{ c *skiffCluster }

func (f skiffFailover) leader(ctx context.Context) (int, error) { return f.c.leader(ctx) }
func (f skiffFailover) kill(i int)                              { f.c.masters[i].kill() }
func (f skiffFailover) restart(i int) error                     { return f.c.masters[i].start() }
func (f skiffFailover) waitHealthy(ctx context.Context) error {
	return f.c.waitServing(ctx, 60*time.Second)
}

func (f skiffFailover) transfer(ctx context.Context) error {
	cl, err := f.c.client(0)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = cl.TransferLeadership(ctx, "")
	return err
}

// leaderEvents returns, from the masters' logs, when a master first logged
// "became leader" (raft elected it) and "leader ready" (barrier committed,
// serving writes) at or after t.
func (f skiffFailover) leaderEvents(t time.Time) (elected, ready time.Time) {
	for _, m := range f.c.masters {
		data, err := os.ReadFile(m.logPath)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if !strings.Contains(line, `"became leader"`) && !strings.Contains(line, `"leader ready"`) {
				continue
			}
			var rec struct {
				Time time.Time `json:"time"`
				Msg  string    `json:"msg"`
			}
			if json.Unmarshal([]byte(line), &rec) != nil || rec.Time.Before(t) {
				continue
			}
			switch rec.Msg {
			case "became leader":
				if elected.IsZero() || rec.Time.Before(elected) {
					elected = rec.Time
				}
			case "leader ready":
				if ready.IsZero() || rec.Time.Before(ready) {
					ready = rec.Time
				}
			}
		}
	}
	return elected, ready
}
