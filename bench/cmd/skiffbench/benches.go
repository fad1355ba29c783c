package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// benchMicro runs the go test microbenchmarks briefly and reports ns/op
// with allocations. For comparisons across commits run them with -count
// and benchstat (docs/performance.md).
func benchMicro(ctx context.Context, _ *env, o options, rep *Report) error {
	args := []string{"test", "-run", "^$", "-bench", ".", "-benchmem", "-benchtime", o.microTime,
		"./fsm/", "./proto/", "./bench/micro/"}
	cmd := exec.CommandContext(ctx, "go", args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "pkg: ") {
			pkg = strings.TrimPrefix(line, "pkg: github.com/skiff-sh/skiff/")
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || f[3] != "ns/op" {
			continue
		}
		nsop, _ := strconv.ParseFloat(f[2], 64)
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i] // GOMAXPROCS suffix
		}
		var extra []string
		for i := 4; i+1 < len(f); i += 2 {
			extra = append(extra, f[i]+" "+f[i+1])
		}
		unit, v := "ns/op", nsop
		if nsop >= 1e6 {
			unit, v = "ms/op", nsop/1e6
		} else if nsop >= 1e3 {
			unit, v = "us/op", nsop/1e3
		}
		rep.add("micro/"+pkg, name, v, unit, nil, "", strings.Join(extra, ", "))
	}
	if err != nil {
		return fmt.Errorf("go test -bench: %w", err)
	}
	return nil
}

// benchRaft measures raft.Apply alone (no-op FSM, 256-byte entries) and
// raft with skiff's store applying encoded ConfigMap creates, in process.
func benchRaft(ctx context.Context, e *env, o options, rep *Report) error {
	for _, name := range o.raftVariants {
		v, err := parseRaftVariant(name)
		if err != nil {
			return err
		}
		r, err := startRawRaft(ctx, e, 3, v)
		if err != nil {
			return err
		}
		for _, c := range o.clients {
			res, err := runWrites(ctx, r, c, o.duration)
			if err != nil {
				r.close()
				return err
			}
			reportWrites(rep, "raft", r.name(), res, nil)
		}
		if v.fsm {
			lag, err := r.followerLag(ctx, 50)
			if err != nil {
				r.close()
				return err
			}
			sortDurations(lag)
			rep.add("raft", r.name()+" follower apply lag p50", ms(percentile(lag, 50)), "ms", nil,
				fmt.Sprintf("p99 %.1fms", ms(percentile(lag, 99))), "leader ack -> both followers applied, idle cluster")
		}
		r.close()
	}
	return nil
}

func reportWrites(rep *Report, bench, what string, res writeResult, p99goal *goal) {
	c := res.clients
	note := fmt.Sprintf("%d writes in %.1fs", res.ops, res.elapsed.Seconds())
	if res.errors > 0 {
		note += fmt.Sprintf(", %d errors", res.errors)
	}
	note = joinNotes(note, stealNote(res.steal))
	rep.add(bench, fmt.Sprintf("%s writes/s, %d clients", what, c), res.rate(), "/s", nil, "", note)
	rep.add(bench, fmt.Sprintf("%s p50, %d clients", what, c), ms(res.p50), "ms", nil, "", "")
	p99note := stealNote(res.steal)
	if p99goal != nil {
		// What raft alone gave in this run, beside the target: the hour
		// moves both.
		if raw, ok := rep.value("raft", fmt.Sprintf("raft p99, %d clients", c)); ok {
			p99note = joinNotes(p99note, fmt.Sprintf("raw raft in-process p99 %.1fms in this run", raw))
		}
	}
	rep.add(bench, fmt.Sprintf("%s p99, %d clients", what, c), ms(res.p99), "ms", p99goal, fmt.Sprintf("max %.1fms", ms(res.max)), p99note)
}

// reportCPU adds the CPU per acknowledged write of runs of one system: the
// median of the servers' (each server's share in the note), the clients',
// and how busy the machine was, which tells a CPU-bound run from one that
// waits (on fsync, or on the network).
func reportCPU(rep *Report, bench, what string, runs []writeResult) {
	var servers, clients, busy []float64
	var each []time.Duration
	for _, r := range runs {
		sv, cl, b := r.cpuPerWrite()
		if sv == 0 {
			continue
		}
		servers = append(servers, us(sv))
		clients = append(clients, us(cl))
		busy = append(busy, 100*b)
		if each == nil {
			for _, d := range r.serverCPU {
				each = append(each, d/time.Duration(r.ops))
			}
		}
	}
	if len(servers) == 0 {
		return
	}
	var parts []string
	for _, d := range each {
		parts = append(parts, fmt.Sprintf("%.0f", us(d)))
	}
	rep.add(bench, fmt.Sprintf("%s servers' CPU per write, %d clients", what, runs[0].clients), median(servers), "us", nil,
		spread(servers, "us"), fmt.Sprintf("per server %s us (first run); clients %.0f us; machine %.0f%% busy (all %d cores)",
			strings.Join(parts, " / "), median(clients), median(busy), runtime.NumCPU()))
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// benchWrites: 3 masters, 256-byte ConfigMaps created through the API by
// 1 / 16 / 64 clients that start on different masters; like every
// client.Client they move to the leader its first answer names.
func benchWrites(ctx context.Context, e *env, o options, rep *Report) error {
	c, err := startSkiff(ctx, e, o.skiff, "writes", 3, o.serverArgs)
	if err != nil {
		return err
	}
	defer c.close()
	t := &skiffTarget{c: c, namespace: "default"}
	for _, n := range o.clients {
		stopPerf := perfLeader(ctx, c, o.perfDir, fmt.Sprintf("writes-%d", n), o.duration)
		before := c.scrapeAll(ctx)
		res, err := runWrites(ctx, t, n, o.duration)
		stopPerf()
		if err != nil {
			return err
		}
		logBatches(ctx, rep, c, "API", n, before)
		var g *goal
		if n >= 64 {
			g = atMost(30, "ms")
		}
		reportWrites(rep, "writes", "API", res, g)
		reportCPU(rep, "writes", "API", []writeResult{res})
	}
	// The same with every client started on the leader (so not even the
	// first write is forwarded), with the leader's latency split.
	ends := []int{o.clients[0]}
	if len(o.clients) > 1 {
		ends = append(ends, o.clients[len(o.clients)-1])
	}
	for _, n := range ends {
		l, err := c.leader(ctx)
		if err != nil {
			return err
		}
		before, _ := promSums(ctx, c.masters[l].httpAddr)
		res, err := runWrites(ctx, &skiffTarget{c: c, namespace: "default", leaderOnly: true}, n, o.duration)
		if err != nil {
			return err
		}
		reportWrites(rep, "writes", "API via leader only", res, nil)
		reportCPU(rep, "writes", "API via leader only", []writeResult{res})
		if after, err := promSums(ctx, c.masters[l].httpAddr); err == nil && before != nil {
			leaderBreakdown(rep, "API via leader only", n, res.mean, before, after)
		}
	}
	if rss, _, err := memKB(c.masters[0].pid()); err == nil {
		logf("m1 RSS after the write runs: %.0f MB", float64(rss)/1024)
	}
	return nil
}

func failoverSettingsFor(o options, timeout time.Duration) failoverSettings {
	return failoverSettings{clients: o.failClients, reqTimeout: timeout, backoff: o.backoff,
		kills: o.kills, transfers: o.transfers, settle: time.Second}
}

// reportFailover adds the rows of one failover run. withGoals applies the
// targets (skiff with its default timeouts).
func reportFailover(rep *Report, bench, system string, s failoverSettings, res failoverResult, withGoals bool) {
	settings := fmt.Sprintf("%d clients, per-request timeout %s, backoff %s fixed", s.clients, s.reqTimeout, s.backoff)
	tag := fmt.Sprintf("%s timeout %s", system, s.reqTimeout)
	g := func(x *goal) *goal {
		if withGoals {
			return x
		}
		return nil
	}
	if len(res.windows) > 0 {
		med, mx := durStats(res.windows)
		rep.add(bench, tag+": unavailability median", med.Seconds(), "s", g(atMost(1.0, "s")), "", settings)
		rep.add(bench, tag+": unavailability max", mx.Seconds(), "s", g(atMost(2.0, "s")), durList(res.windows), "")
	}
	if len(res.elected) > 0 {
		el, _ := durStats(res.elected)
		rd, _ := durStats(res.ready)
		rep.add(bench, tag+": kill -> new leader elected, median", el.Seconds(), "s", nil, durList(res.elected), "from the masters' logs")
		rep.add(bench, tag+": kill -> new leader ready, median", rd.Seconds(), "s", nil, durList(res.ready), "barrier committed, serving writes")
	}
	if res.timeouts > 0 {
		rep.add(bench, tag+": kills with no write for 30s", float64(res.timeouts), "", g(exactly(0)), "", "")
	}
	rep.add(bench, tag+": lost acknowledged writes", float64(len(res.missing)), "", g(exactly(0)), "",
		fmt.Sprintf("%d acknowledged, all read back after the run; %d failed attempts retried", res.acked, res.failed))
	if len(res.missing) > 0 {
		rep.broken(bench, fmt.Sprintf("%s lost %d acknowledged writes, e.g. %v", tag, len(res.missing), res.missing[:min(5, len(res.missing))]))
	}
	if len(res.transfers) > 0 {
		med, mx := durStats(res.transfers)
		rep.add(bench, tag+": graceful transfer -> writes median", ms(med), "ms", g(atMost(100, "ms")), durList(res.transfers),
			fmt.Sprintf("max %.0fms", ms(mx)))
	}
}

// benchFailover kills the leader of a skiff cluster under write load.
func benchFailover(ctx context.Context, e *env, o options, rep *Report) error {
	c, err := startSkiff(ctx, e, o.skiff, "failover", 3, o.serverArgs)
	if err != nil {
		return err
	}
	defer c.close()
	for _, to := range o.timeouts {
		s := failoverSettingsFor(o, to)
		logf("skiff, per-request timeout %s", to)
		res, err := runFailover(ctx, &skiffTarget{c: c, namespace: "default"}, skiffFailover{c}, s, logf)
		if err != nil {
			return err
		}
		reportFailover(rep, "failover", "skiff", s, res, true)
	}
	return nil
}

// benchCompareWrites runs the write workload against skiff and etcd,
// interleaved: for each round and client count both run back to back (the
// order alternates between rounds), and the ratio of each adjacent pair is
// what counts on a noisy machine.
func benchCompareWrites(ctx context.Context, e *env, o options, rep *Report) error {
	sk, err := startSkiff(ctx, e, o.skiff, "compare", 3, o.serverArgs)
	if err != nil {
		return err
	}
	defer sk.close()
	et, err := startEtcd(ctx, e, 3)
	if err != nil {
		return err
	}
	defer et.close()
	targets := []target{&skiffTarget{c: sk, namespace: "default"}, &etcdTarget{c: et, prefix: "/bench/"}}
	type cell struct{ skiff, etcd []writeResult }
	cells := map[int]*cell{}
	for _, n := range o.clients {
		cells[n] = &cell{}
	}
	for round := 0; round < o.rounds; round++ {
		for _, n := range o.clients {
			order := []int{0, 1}
			if round%2 == 1 {
				order = []int{1, 0}
			}
			for _, ti := range order {
				res, err := runWrites(ctx, targets[ti], n, o.duration)
				if err != nil {
					return err
				}
				logf("round %d, %d clients, %s: %.0f writes/s, p50 %.1fms, p99 %.1fms", round+1, n, targets[ti].name(), res.rate(), ms(res.p50), ms(res.p99))
				if ti == 0 {
					cells[n].skiff = append(cells[n].skiff, res)
				} else {
					cells[n].etcd = append(cells[n].etcd, res)
				}
			}
		}
	}
	for _, n := range o.clients {
		cl := cells[n]
		var ratios, sRate, eRate, sP99, eP99 []float64
		for i := range cl.skiff {
			ratios = append(ratios, cl.skiff[i].rate()/cl.etcd[i].rate())
			sRate = append(sRate, cl.skiff[i].rate())
			eRate = append(eRate, cl.etcd[i].rate())
			sP99 = append(sP99, ms(cl.skiff[i].p99))
			eP99 = append(eP99, ms(cl.etcd[i].p99))
		}
		g := atLeast(1.5, "x")
		if n == 1 {
			g = atLeast(1.0, "x")
		}
		rep.add("compare", fmt.Sprintf("skiff/etcd writes ratio, %d clients", n), median(ratios), "x", g, spread(ratios, "x"),
			joinNotes("median of interleaved pairs", roundSteals(cl.skiff, cl.etcd)))
		if even := evenPairs(ratios, cl.skiff, cl.etcd, evenSteal); len(even) > 0 && len(even) < len(ratios) {
			rep.add("compare", fmt.Sprintf("skiff/etcd writes ratio, %d clients, pairs with even steal", n), median(even), "x", nil, spread(even, "x"),
				fmt.Sprintf("the pairs whose two runs lost shares of the machine to the host within %.0f points of each other", 100*evenSteal))
		}
		rep.add("compare", fmt.Sprintf("skiff writes/s, %d clients", n), median(sRate), "/s", nil, spread(sRate, "/s"), "")
		rep.add("compare", fmt.Sprintf("etcd writes/s, %d clients", n), median(eRate), "/s", nil, spread(eRate, "/s"), "")
		var p99g *goal
		if n >= 64 {
			p99g = atMost(30, "ms")
		}
		rep.add("compare", fmt.Sprintf("skiff p99, %d clients", n), median(sP99), "ms", p99g, spread(sP99, "ms"), "")
		rep.add("compare", fmt.Sprintf("etcd p99, %d clients", n), median(eP99), "ms", nil, spread(eP99, "ms"), "")
		reportCPU(rep, "compare", "skiff", cl.skiff)
		reportCPU(rep, "compare", "etcd", cl.etcd)
	}
	return nil
}

// evenSteal is how far apart, as a share of the machine, the host's steal
// in a comparison pair's two runs may be for the pair to count as even.
const evenSteal = 0.03

// evenPairs returns the ratios of the pairs whose runs had the host's steal
// within within of each other: on a shared machine the host may take a
// tenth of the CPUs during one run of a pair and nothing during the other.
func evenPairs(ratios []float64, skiff, etcd []writeResult, within float64) []float64 {
	var out []float64
	for i := range ratios {
		a, b := skiff[i].steal, etcd[i].steal
		if a >= 0 && b >= 0 && math.Abs(a-b) <= within {
			out = append(out, ratios[i])
		}
	}
	return out
}

// roundSteals lists the host's steal in each interleaved pair's runs, for
// a comparison's note.
func roundSteals(skiff, etcd []writeResult) string {
	var parts []string
	for i := range skiff {
		if skiff[i].steal < 0 || etcd[i].steal < 0 {
			return ""
		}
		parts = append(parts, fmt.Sprintf("%.0f/%.0f", 100*skiff[i].steal, 100*etcd[i].steal))
	}
	return "host steal % per pair, skiff/etcd: " + strings.Join(parts, " ")
}

// benchCompareFailover runs skiff and etcd through the same failover driver
// with the same client settings, one after the other for each timeout.
func benchCompareFailover(ctx context.Context, e *env, o options, rep *Report) error {
	sk, err := startSkiff(ctx, e, o.skiff, "cfailover", 3, o.serverArgs)
	if err != nil {
		return err
	}
	defer sk.close()
	et, err := startEtcd(ctx, e, 3)
	if err != nil {
		return err
	}
	defer et.close()
	for _, to := range o.timeouts {
		s := failoverSettingsFor(o, to)
		logf("skiff, per-request timeout %s", to)
		res, err := runFailover(ctx, &skiffTarget{c: sk, namespace: "default"}, skiffFailover{sk}, s, logf)
		if err != nil {
			return err
		}
		reportFailover(rep, "compare-failover", "skiff", s, res, true)
		logf("etcd, per-request timeout %s", to)
		res, err = runFailover(ctx, &etcdTarget{c: et, prefix: "/failover/"}, etcdFailover{et}, s, logf)
		if err != nil {
			return err
		}
		reportFailover(rep, "compare-failover", "etcd", s, res, false)
	}
	return nil
}

// perfLeader records a CPU profile of the leading master with Linux perf
// (the masters have no pprof endpoint) for about dur, into
// dir/name.perf.data. It does nothing when dir is empty.
func perfLeader(ctx context.Context, c *skiffCluster, dir, name string, dur time.Duration) (wait func()) {
	if dir == "" {
		return func() {}
	}
	l, err := c.leader(ctx)
	if err != nil {
		logf("perf: %v", err)
		return func() {}
	}
	os.MkdirAll(dir, 0o755)
	out := filepath.Join(dir, name+".perf.data")
	secs := fmt.Sprintf("%.0f", max(1, dur.Seconds()-1))
	cmd := exec.CommandContext(ctx, "perf", "record", "-F", "499", "-g", "-p", fmt.Sprint(c.masters[l].pid()), "-o", out, "--", "sleep", secs)
	if err := cmd.Start(); err != nil {
		logf("perf: %v (apt-get install linux-perf)", err)
		return func() {}
	}
	return func() {
		cmd.Wait()
		logf("perf profile of the leader: perf report -i %s --no-children --stdio", out)
	}
}
