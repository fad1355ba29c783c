package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/bench/internal/objects"
	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

type scaleSettings struct {
	nodes, pods, namespaces int
	watchers, events        int
	lists                   int // repetitions of each list
	snapshots               int
}

// createAll creates n objects with conc concurrent clients and returns the
// rate. make builds object i.
func createAll(ctx context.Context, c *skiffCluster, n, conc int, mk func(i int) (*pb.Object, error)) (float64, error) {
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		cl, err := c.client(w)
		if err != nil {
			return 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				o, err := mk(i)
				if err == nil {
					rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					_, err = cl.Create(rctx, o)
					cancel()
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("create object %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(n) / time.Since(start).Seconds(), ctx.Err()
}

func benchScale(ctx context.Context, e *env, bin string, serverArgs []string, s scaleSettings, rep *Report) error {
	const bench = "scale"
	extra := append([]string(nil), serverArgs...)
	note := "controllers on"
	if supportsFlag(bin, "controllers") {
		// The fake nodes never heartbeat: node lifecycle would evict their
		// pods mid-measurement. This is the store and API alone.
		extra = append(extra, "--controllers=")
		note = "controllers off (fake nodes)"
	}
	pprof := supportsFlag(bin, "enable-pprof")
	if pprof {
		extra = append(extra, "--enable-pprof") // benchLargeObjects reads the live heap
	}
	c, err := startSkiff(ctx, e, bin, "scale", 3, extra)
	if err != nil {
		return err
	}
	defer c.close()

	for i := 0; i < s.namespaces; i++ {
		if _, err := createAll(ctx, c, 1, 1, func(int) (*pb.Object, error) {
			return pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: fmt.Sprintf("scale-%d", i)}}), nil
		}); err != nil {
			return err
		}
	}
	if _, err := createAll(ctx, c, 1, 1, func(int) (*pb.Object, error) {
		return pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "watch"}}), nil
	}); err != nil {
		return err
	}
	rate, err := createAll(ctx, c, s.nodes, 32, func(i int) (*pb.Object, error) {
		return objects.Node(fmt.Sprintf("node-%04d", i), fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255+1))
	})
	if err != nil {
		return fmt.Errorf("create nodes: %w", err)
	}
	rep.add(bench, fmt.Sprintf("create %d nodes (32 clients)", s.nodes), rate, "obj/s", nil, "", note)
	sample, _ := objects.Pod("scale-0", "sample", "node-0000", "app-0")
	rate, err = createAll(ctx, c, s.pods, 64, func(i int) (*pb.Object, error) {
		return objects.Pod(fmt.Sprintf("scale-%d", i%s.namespaces), fmt.Sprintf("pod-%05d", i),
			fmt.Sprintf("node-%04d", i%s.nodes), fmt.Sprintf("app-%d", i%100))
	})
	if err != nil {
		return fmt.Errorf("create pods: %w", err)
	}
	rep.add(bench, fmt.Sprintf("create %d pods (64 clients)", s.pods), rate, "obj/s", nil, "",
		fmt.Sprintf("pod as sent %d bytes", gproto.Size(sample)))

	leaderRSS := func(when string, g *goal) {
		l, err := c.leader(ctx)
		if err != nil {
			rep.fail(bench, err)
			return
		}
		rss, hwm, err := memKB(c.masters[l].pid())
		if err != nil {
			rep.fail(bench, err)
			return
		}
		var others []string
		for i, m := range c.masters {
			if i != l {
				r, _, _ := memKB(m.pid())
				others = append(others, fmt.Sprintf("%.0f", float64(r)/1024))
			}
		}
		rep.add(bench, "leader RSS "+when, float64(rss)/1024, "MB", g, "",
			fmt.Sprintf("peak %.0f MB; followers %s MB", float64(hwm)/1024, strings.Join(others, ", ")))
	}
	leaderRSS(fmt.Sprintf("(%d nodes, %d pods)", s.nodes, s.pods), atMost(500, "MB"))

	// Snapshot save through the CLI, as an operator takes a backup.
	var snapTimes []float64
	var snapSize int64
	for i := 0; i < s.snapshots; i++ {
		file := filepath.Join(c.dir, fmt.Sprintf("backup-%d.snap", i))
		cmd := exec.CommandContext(ctx, bin, "--server", strings.Join(c.apiAddrs(), ","), "--insecure", "cluster", "snapshot", "save", file)
		cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(c.dir, "none.yaml"))
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			rep.failed(bench, "snapshot save", nil, fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out))))
			break
		}
		snapTimes = append(snapTimes, ms(time.Since(start)))
		if fi, err := os.Stat(file); err == nil {
			snapSize = fi.Size()
		}
		os.Remove(file)
	}
	if len(snapTimes) > 0 {
		rep.add(bench, "snapshot save time (CLI, end to end)", median(snapTimes), "ms", nil, spread(snapTimes, "ms"), "")
		rep.add(bench, "snapshot size", float64(snapSize)/(1<<20), "MB", nil, "", "")
	}

	// Lists.
	lists := []struct {
		name string
		kind string
		opts client.ListOptions
	}{
		{fmt.Sprintf("list all %d pods", s.pods), "Pod", client.ListOptions{}},
		{fmt.Sprintf("list all %d pods (stale)", s.pods), "Pod", client.ListOptions{Stale: true}},
		{fmt.Sprintf("list pods of 1 namespace (%d)", s.pods/s.namespaces), "Pod", client.ListOptions{Namespace: "scale-3"}},
		{"list pods by label app=app-7 (1%)", "Pod", client.ListOptions{LabelSelector: "app=app-7"}},
		{"list pods by spec.nodeName (1 node)", "Pod", client.ListOptions{FieldSelector: "spec.nodeName=node-0007"}},
		{fmt.Sprintf("list all %d nodes", s.nodes), "Node", client.ListOptions{}},
	}
	cl, err := c.client(0)
	if err != nil {
		return err
	}
	defer cl.Close()
	for _, l := range lists {
		var lat []time.Duration
		var n int
		var lerr error
		for i := 0; i < s.lists; i++ {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			start := time.Now()
			items, _, err := cl.List(rctx, l.kind, l.opts)
			cancel()
			if err != nil {
				lerr = err
				break
			}
			lat = append(lat, time.Since(start))
			n = len(items)
		}
		if lerr != nil {
			rep.failed(bench, l.name, nil, lerr)
			continue
		}
		sortDurations(lat)
		rep.add(bench, l.name+" p50", ms(percentile(lat, 50)), "ms", nil,
			fmt.Sprintf("max %.1fms n=%d", ms(lat[len(lat)-1]), len(lat)), fmt.Sprintf("%d items", n))
	}

	if err := benchWatchers(ctx, c, s, rep); err != nil {
		rep.failed(bench+"/watch", "watch fan-out", nil, err)
	}
	leaderRSS(fmt.Sprintf("(+ %d watchers)", s.watchers), atMost(500, "MB"))
	if pprof {
		if err := benchLargeObjects(ctx, c, cl, rep); err != nil {
			rep.failed(bench, "large objects", nil, err)
		}
	}
	return nil
}

// benchWatchers opens s.watchers watches on ConfigMaps of one namespace,
// spread over the masters, then creates s.events ConfigMaps one at a time
// and measures, for each watcher and event, the time from the write's
// acknowledgement to the watcher receiving it.
func benchWatchers(ctx context.Context, c *skiffCluster, s scaleSettings, rep *Report) error {
	const bench = "scale/watch"
	const perConn = 50
	leader, err := c.leader(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type recv struct {
		name string
		at   time.Time
	}
	var clients []*client.Client
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	got := make([][]recv, s.watchers)
	onLeader := make([]bool, s.watchers)
	var wg sync.WaitGroup
	var done atomic.Int64
	for i := 0; i < s.watchers; i++ {
		if i%perConn == 0 {
			cl, err := c.only((i / perConn) % len(c.masters))
			if err != nil {
				return err
			}
			clients = append(clients, cl)
		}
		cl := clients[len(clients)-1]
		onLeader[i] = (i/perConn)%len(c.masters) == leader
		w, err := cl.Watch(wctx, "ConfigMap", client.WatchOptions{Namespace: "watch"})
		if err != nil {
			return fmt.Errorf("open watch %d: %w", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.Close()
			rs := make([]recv, 0, s.events)
			for len(rs) < s.events {
				ev, err := w.Next(wctx)
				if err != nil {
					break
				}
				rs = append(rs, recv{ev.GetObject().Meta().GetName(), time.Now()})
			}
			got[i] = rs
			done.Add(1)
		}()
	}
	wcl, err := c.client(leader)
	if err != nil {
		return err
	}
	defer wcl.Close()
	acks := map[string]time.Time{}
	sends := map[string]time.Time{}
	for k := 0; k < s.events; k++ {
		name := fmt.Sprintf("ev-%04d", k)
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		start := time.Now()
		_, err := wcl.Create(rctx, objects.ConfigMap("watch", name, objects.PayloadBytes))
		rcancel()
		if err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		sends[name], acks[name] = start, time.Now()
		time.Sleep(50 * time.Millisecond)
	}
	_ = poll(ctx, 30*time.Second, 20*time.Millisecond, func() error {
		if int(done.Load()) < s.watchers {
			return errors.New("watchers still receiving")
		}
		return nil
	})
	cancel()
	wg.Wait()
	var all, lead, follow []time.Duration
	early, missing := 0, 0
	for i, rs := range got {
		missing += s.events - len(rs)
		for _, r := range rs {
			ack, ok := acks[r.name]
			if !ok {
				continue
			}
			d := r.at.Sub(ack)
			if d < 0 {
				early++ // delivered before the writer saw its ack
				d = 0
			}
			all = append(all, d)
			if onLeader[i] {
				lead = append(lead, d)
			} else {
				follow = append(follow, d)
			}
		}
	}
	for _, d := range [][]time.Duration{all, lead, follow} {
		sortDurations(d)
	}
	if len(all) == 0 {
		return errors.New("no watch event received")
	}
	note := fmt.Sprintf("%d watchers x %d events; %d deliveries missing; %.0f%% arrived before the ack (counted as 0)",
		s.watchers, s.events, missing, 100*float64(early)/float64(len(all)))
	rep.add(bench, "ack -> watcher p50", ms(percentile(all, 50)), "ms", nil, "", note)
	rep.add(bench, "ack -> watcher p99", ms(percentile(all, 99)), "ms", nil, fmt.Sprintf("max %.1fms", ms(all[len(all)-1])), "")
	if len(lead) > 0 && len(follow) > 0 {
		rep.add(bench, "ack -> watcher p99, on the leader", ms(percentile(lead, 99)), "ms", nil, fmt.Sprintf("p50 %.1fms", ms(percentile(lead, 50))), "")
		rep.add(bench, "ack -> watcher p99, on followers", ms(percentile(follow, 99)), "ms", nil, fmt.Sprintf("p50 %.1fms", ms(percentile(follow, 50))), "")
	}
	if missing > 0 {
		rep.failed(bench, "watch deliveries", nil, fmt.Errorf("%d of %d deliveries did not arrive within 30s", missing, s.watchers*s.events))
	}
	return nil
}
