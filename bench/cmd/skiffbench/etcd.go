package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/skiff-sh/skiff/bench/internal/objects"
)

// etcdCluster is a 3-member etcd on loopback: the baseline of the
// comparison, started from Debian's etcd-server package.
type etcdCluster struct {
	env     *env
	dir     string
	members []*etcdMember
}

type etcdMember struct {
	*proc
	name               string
	clientURL, peerURL string
}

// etcdBinary finds etcd, or explains how to get it.
func etcdBinary() (string, error) {
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, nil
	}
	return "", errors.New("etcd is not installed: `make bench-compare` installs Debian's etcd-server (apt-get update && apt-get install -y etcd-server)")
}

func startEtcd(ctx context.Context, e *env, n int) (_ *etcdCluster, retErr error) {
	bin, err := etcdBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(e.root, "etcd-")
	if err != nil {
		return nil, err
	}
	c := &etcdCluster{env: e, dir: dir}
	defer func() {
		if retErr != nil {
			c.close()
		}
	}()
	var initial []string
	for i := 1; i <= n; i++ {
		m := &etcdMember{name: fmt.Sprintf("e%d", i)}
		ca, err := e.addr()
		if err != nil {
			return nil, err
		}
		pa, err := e.addr()
		if err != nil {
			return nil, err
		}
		m.clientURL, m.peerURL = "http://"+ca, "http://"+pa
		initial = append(initial, m.name+"="+m.peerURL)
		c.members = append(c.members, m)
	}
	token := filepath.Base(dir)
	for _, m := range c.members {
		// Defaults otherwise (heartbeat 100ms, election 1s, fsync on): the
		// etcd that the orientation figures were measured with.
		args := []string{"--name", m.name, "--data-dir", filepath.Join(dir, m.name),
			"--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
			"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", token, "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"}
		m.proc = e.newProc("etcd-"+m.name, bin, args, filepath.Join(dir, m.name+".log"))
		if err := m.start(); err != nil {
			return nil, err
		}
	}
	if err := c.waitHealthy(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *etcdCluster) close() {
	for _, m := range c.members {
		if m.proc != nil {
			m.kill()
		}
	}
	if !c.env.keep {
		os.RemoveAll(c.dir)
	}
}

func (c *etcdCluster) endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.clientURL)
	}
	return out
}

func (c *etcdCluster) client(endpoints ...string) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		endpoints = c.endpoints()
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// statuses asks every member for its status; members that do not answer
// are nil.
func (c *etcdCluster) statuses(ctx context.Context) ([]*clientv3.StatusResponse, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	out := make([]*clientv3.StatusResponse, len(c.members))
	var errs []error
	for i, m := range c.members {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cl.Status(sctx, m.clientURL)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
			continue
		}
		out[i] = st
	}
	return out, errors.Join(errs...)
}

// leader returns the index of the leading member.
func (c *etcdCluster) leader(ctx context.Context) (int, error) {
	sts, _ := c.statuses(ctx)
	for _, st := range sts {
		if st == nil || st.Leader == 0 {
			continue
		}
		for j, s := range sts {
			if s != nil && s.Header.MemberId == st.Leader {
				return j, nil
			}
		}
	}
	return -1, errors.New("no etcd leader")
}

// waitHealthy waits until every member answers and all name the same
// leader, and a write succeeds.
func (c *etcdCluster) waitHealthy(ctx context.Context) error {
	err := poll(ctx, 60*time.Second, 100*time.Millisecond, func() error {
		for _, m := range c.members {
			if m.exited() {
				return fmt.Errorf("%s exited:\n%s", m.name, m.logTail(20))
			}
		}
		sts, err := c.statuses(ctx)
		if err != nil {
			return err
		}
		for _, st := range sts {
			if st.Leader == 0 || st.Leader != sts[0].Leader {
				return errors.New("members do not agree on a leader")
			}
		}
		cl, err := c.client()
		if err != nil {
			return err
		}
		defer cl.Close()
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err = cl.Put(pctx, "/health", "ok")
		return err
	})
	if err != nil {
		return fmt.Errorf("etcd cluster not healthy: %w", err)
	}
	return nil
}

// etcdTarget writes 256-byte values with clientv3 Put.
type etcdTarget struct {
	c      *etcdCluster
	prefix string
	value  string
}

func (t *etcdTarget) name() string { return "etcd" }

func (t *etcdTarget) serverPIDs() []int {
	var out []int
	for _, m := range t.c.members {
		out = append(out, m.pid())
	}
	return out
}

func (t *etcdTarget) newWriter(ctx context.Context, i int) (writer, error) {
	cl, err := t.c.client()
	if err != nil {
		return nil, err
	}
	if t.value == "" {
		t.value = string(objects.Value(objects.PayloadBytes))
	}
	return &etcdWriter{cl: cl, prefix: t.prefix, value: t.value}, nil
}

type etcdWriter struct {
	cl     *clientv3.Client
	prefix string
	value  string
}

func (w *etcdWriter) put(ctx context.Context, key string) error {
	_, err := w.cl.Put(ctx, w.prefix+key, w.value)
	return err
}

func (w *etcdWriter) close() { w.cl.Close() }

func (t *etcdTarget) missing(ctx context.Context, keys []string) ([]string, error) {
	cl, err := t.c.client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := cl.Get(ctx, t.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	have := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		have[strings.TrimPrefix(string(kv.Key), t.prefix)] = true
	}
	var out []string
	for _, k := range keys {
		if !have[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

// etcdFailover drives kills and leadership moves of the etcd cluster.
type etcdFailover struct{ c *etcdCluster }

func (f etcdFailover) leader(ctx context.Context) (int, error) { return f.c.leader(ctx) }
func (f etcdFailover) kill(i int)                              { f.c.members[i].kill() }
func (f etcdFailover) restart(i int) error                     { return f.c.members[i].start() }
func (f etcdFailover) waitHealthy(ctx context.Context) error   { return f.c.waitHealthy(ctx) }

// transfer moves leadership to a follower with MoveLeader, sent to the
// leader as etcd requires.
func (f etcdFailover) transfer(ctx context.Context) error {
	l, err := f.c.leader(ctx)
	if err != nil {
		return err
	}
	sts, err := f.c.statuses(ctx)
	if err != nil {
		return err
	}
	to := sts[(l+1)%len(sts)].Header.MemberId
	cl, err := f.c.client(f.c.members[l].clientURL)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = cl.MoveLeader(ctx, to)
	return err
}
