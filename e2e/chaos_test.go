package e2e

// The chaos suite, master scenarios (issue 7, items 2, 3, 6 and 7): real
// `skiff server` processes under SIGKILL, SIGSTOP, network cuts and
// restarts while clients write and read through them, then checks that
// nothing acknowledged was lost and that the history is linearizable.
//
//	go test ./e2e -run Chaos -v                      # the short version (also part of `make test`)
//	make chaos                                       # the full version
//	go test ./e2e -run Chaos -v -chaos.duration 5m -chaos.kill-interval 3s

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/client"
)

// scenario is one chaos run against one cluster.
type scenario struct {
	t     *testing.T
	p     chaosParams
	cc    *chaosCluster
	w     *workload
	watch *watchRecorder
	rep   scenarioReport
	saved bool
	// watchOn is the master that served the watch when last looked.
	watchOn string
}

const hotKeys = 8

func newScenario(t *testing.T, name string, partitions bool) *scenario {
	p := chaosConfig(t)
	cc := startChaosCluster(t, 3, partitions)
	sc := &scenario{t: t, p: p, cc: cc, w: newWorkload(cc, p, hotKeys), rep: scenarioReport{
		Scenario: name, Started: time.Now(), Linearizable: "-", Extra: map[string]any{},
		Params: map[string]string{"full": fmt.Sprint(p.full), "duration": p.duration.String(), "interval": p.interval.String(),
			"clients": fmt.Sprint(p.clients), "seed": fmt.Sprint(p.seed), "masters": "3"},
	}}
	// Whatever happens, stop the clients before the masters go, and report.
	t.Cleanup(func() {
		if !sc.saved {
			sc.rep.Problems = append(sc.rep.Problems, "the scenario stopped before its checks (see the test log)")
			sc.rep.Seconds = time.Since(sc.rep.Started).Seconds()
			saveReport(t, sc.rep)
		}
	})
	t.Cleanup(func() {
		sc.w.halt()
		if sc.watch != nil {
			sc.watch.cancel()
		}
	})
	if err := sc.w.ensureNamespace(); err != nil {
		t.Fatalf("create namespace %s: %v", chaosNS, err)
	}
	leader, err := cc.waitLeaderAmong(30*time.Second, cc.masters)
	if err != nil {
		t.Fatal(err)
	}
	if sc.watch, err = startWatch(cc, leader); err != nil {
		t.Fatal(err)
	}
	return sc
}

// load starts the workload's clients: p.clients through every master and,
// if pinned, three more on each master alone: one like the others, one
// that only reads and one that (almost) only writes, so that whatever
// happens to a master finds both reads and writes in flight on it.
func (sc *scenario) load(pinned bool, kind sessionKind) {
	sc.w.start(sc.p.clients, func(i int) (*client.Client, string) { return sc.cc.rotatedClient(i), "" }, kind)
	if pinned {
		onEach := func(i int) (*client.Client, string) {
			m := sc.cc.masters[i]
			return sc.cc.pinnedClient(m), m.name
		}
		sc.w.start(len(sc.cc.masters), onEach, kind)
		sc.w.start(len(sc.cc.masters), onEach, reader)
		sc.w.start(len(sc.cc.masters), onEach, own)
	}
	sc.warmUp()
}

// warmUp waits until writes are being acknowledged.
func (sc *scenario) warmUp() {
	err := poll(60*time.Second, func() error {
		n := 0
		for _, r := range sc.w.records() {
			if r.acked() {
				n++
			}
		}
		if n < 50 {
			return fmt.Errorf("%d writes acknowledged", n)
		}
		return nil
	})
	if err != nil {
		sc.t.Fatalf("workload does not get going: %v", err)
	}
}

// inject records a fault as it is injected, and which master served the
// watch just before.
func (sc *scenario) inject(kind, target string) *faultRecord {
	at := sc.cc.now()
	sc.rep.Faults = append(sc.rep.Faults, faultRecord{Kind: kind, Target: target, at: at, At: at.Seconds(), WatchOn: sc.watchOn})
	sc.t.Logf("t=%6.2fs  %s %s", at.Seconds(), kind, target)
	return &sc.rep.Faults[len(sc.rep.Faults)-1]
}

// noteWatch finds which master serves the scenario's watch (the only watch
// stream on the masters), from their skiff_api_watchers gauges.
func (sc *scenario) noteWatch() {
	sc.watchOn = ""
	for _, m := range sc.cc.live() {
		if n, err := scrapeGauge(m.httpAd, "skiff_api_watchers", sc.cc.token); err == nil && n > 0 {
			sc.watchOn = m.name
			return
		}
	}
}

func (f *faultRecord) lift(at time.Duration) { f.lifted, f.Lifted = at, at.Seconds() }

func (f *faultRecord) elected(l *master, at time.Duration) {
	f.NewLeader, f.ElectedAfter = l.name, (at - f.at).Seconds()
}

// leader returns the current leader's view, failing the test if there is
// none within a while.
func (sc *scenario) leader(among []*master) *masterView {
	sc.t.Helper()
	var lv *masterView
	err := poll(30*time.Second, func() error {
		v, err := sc.cc.leaderOf(sc.cc.views(among, time.Second))
		lv = v
		return err
	})
	if err != nil {
		sc.t.Fatalf("no leader: %v", err)
	}
	return lv
}

// newLeaderSeen reports a leader of a term after term among ms, if one
// is known right now.
func (sc *scenario) newLeaderSeen(term uint64, ms []*master) *master {
	v, err := sc.cc.leaderOf(sc.cc.views(ms, 500*time.Millisecond))
	if err != nil || v.term <= term {
		return nil
	}
	return v.m
}

// healthy waits until every master is up, caught up and follows one
// leader, failing the test otherwise.
func (sc *scenario) healthy() *master {
	sc.t.Helper()
	l, err := sc.cc.waitHealthy(90*time.Second, sc.cc.masters)
	if err != nil {
		sc.t.Fatalf("the cluster did not recover: %v", err)
	}
	return l
}

// loop runs inject every interval until the scenario's duration has passed
// and at least min faults were injected.
func (sc *scenario) loop(min int, inject func(i int)) {
	tick := time.NewTicker(sc.p.interval)
	defer tick.Stop()
	begin := time.Now()
	for i := 0; i < min || time.Since(begin) < sc.p.duration; i++ {
		<-tick.C
		sc.noteWatch()
		inject(i)
	}
}

// rounds runs inject n times, every interval.
func (sc *scenario) rounds(n int, inject func(i int)) {
	tick := time.NewTicker(sc.p.interval)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		sc.noteWatch()
		inject(i)
	}
}

// TestChaosLeaderKill SIGKILLs the leader every interval and restarts it
// shortly after, under concurrent creates, compare-and-set updates and
// reads through every master.
func TestChaosLeaderKill(t *testing.T) {
	sc := newScenario(t, "leader-kill", false)
	cc := sc.cc
	sc.load(false, contended)
	restartAfter := min(time.Second, sc.p.interval/4)
	sc.loop(sc.p.minKills, func(int) {
		lv := sc.leader(cc.live())
		f := sc.inject("kill", lv.m.name)
		cc.crash(lv.m)
		// Restart on schedule, whether or not the others have elected a
		// leader yet; note when they did.
		err := poll(30*time.Second, func() error {
			if f.NewLeader == "" {
				if l := sc.newLeaderSeen(lv.term, cc.live()); l != nil {
					f.elected(l, cc.now())
				}
			}
			if f.lifted == 0 && cc.now()-f.at >= restartAfter {
				cc.restart(lv.m)
				f.lift(cc.now())
			}
			if f.NewLeader == "" || f.lifted == 0 {
				return fmt.Errorf("no new leader yet")
			}
			return nil
		})
		if f.lifted == 0 {
			cc.restart(lv.m)
			f.lift(cc.now())
		}
		if err != nil {
			t.Errorf("after killing %s: %v", lv.m.name, err)
		}
		sc.healthy()
	})
	sc.finish()
}

// TestChaosLeaderPause freezes the leader (SIGSTOP) for longer than the
// election timeout, then lets it run again (SIGCONT). Requests queued on it
// meanwhile reach a master that still believes it leads, in a term that is
// over: it must neither acknowledge a write nor answer a linearizable read
// from that term. Clients pinned to each master make sure it gets such
// requests.
func TestChaosLeaderPause(t *testing.T) {
	sc := newScenario(t, "leader-pause", false)
	cc := sc.cc
	sc.load(true, contended)
	pauseFor := max(2*time.Second, sc.p.interval/2) // the election timeout is 500ms
	type window struct {
		master   string
		from, to time.Duration
	}
	var windows []window
	sc.loop(sc.p.minPauses, func(int) {
		lv := sc.leader(cc.live())
		f := sc.inject("pause", lv.m.name)
		cc.pause(lv.m)
		err := poll(pauseFor+10*time.Second, func() error {
			if f.NewLeader == "" {
				if l := sc.newLeaderSeen(lv.term, cc.others(lv.m)); l != nil {
					f.elected(l, cc.now())
				}
			}
			if cc.now()-f.at < pauseFor {
				return fmt.Errorf("paused")
			}
			if f.NewLeader == "" {
				return fmt.Errorf("the others elected no leader while %s was paused", lv.m.name)
			}
			return nil
		})
		cc.resume(lv.m)
		f.lift(cc.now())
		windows = append(windows, window{lv.m.name, f.at, f.lifted})
		if err != nil {
			t.Errorf("pause of %s: %v", lv.m.name, err)
		}
		sc.healthy()
	})
	sc.finish(func(recs []opRecord, stale map[int]bool) []string {
		// What the clients pinned to a paused leader got for requests in
		// flight while it was frozen: errors, or answers that are correct
		// (which the stale-read, lost-write and linearizability checks
		// decide).
		var writes, acked, unknown, reads, readOK, readStale int
		for i, r := range recs {
			for _, w := range windows {
				// In flight at some point of the pause: sent before or
				// during it, answered (if ever) after the SIGCONT.
				if r.Pinned != w.master || r.Call >= w.to || r.Return <= w.from {
					continue
				}
				if r.In.Op == opGet {
					reads++
					if !r.Drop {
						readOK++
					}
					if stale[i] {
						readStale++
					}
				} else {
					writes++
					if r.acked() {
						acked++
					}
					if r.Out.Unknown {
						unknown++
					}
				}
			}
		}
		sc.rep.Extra["in_flight_to_paused_leader"] = map[string]int{"writes": writes, "writes_acknowledged": acked,
			"writes_unknown": unknown, "reads": reads, "reads_answered": readOK, "reads_stale": readStale}
		sc.t.Logf("requests in flight to a paused leader: %d writes (%d acknowledged, %d unknown), %d reads (%d answered, %d stale)",
			writes, acked, unknown, reads, readOK, readStale)
		var problems []string
		if writes == 0 || reads == 0 {
			problems = append(problems, "no write or no read was in flight to a paused leader: the scenario tested nothing")
		}
		if readStale > 0 {
			problems = append(problems, fmt.Sprintf("a paused leader answered %d reads with stale data after it resumed", readStale))
		}
		return problems
	})
}

// TestChaosPartition cuts the leader off from both followers with
// nftables: the minority side must acknowledge nothing, the majority must
// elect a leader and keep serving, and after the cut heals all converge.
func TestChaosPartition(t *testing.T) {
	sc := newScenario(t, "partition", true)
	cc := sc.cc
	sc.load(true, contended)
	type window struct {
		master        string
		from, elected time.Duration
		to            time.Duration
	}
	var windows []window
	sc.loop(sc.p.minCuts, func(int) {
		lv := sc.leader(cc.live())
		// The cut starts once nft has installed the rules.
		cut := cc.net.isolate(lv.m, cc.others(lv.m))
		f := sc.inject("partition", lv.m.name)
		hold := sc.p.interval
		err := poll(hold+20*time.Second, func() error {
			if f.NewLeader == "" {
				if l := sc.newLeaderSeen(lv.term, cc.others(lv.m)); l != nil {
					f.elected(l, cc.now())
				}
			}
			if cc.now()-f.at < hold {
				return fmt.Errorf("cut")
			}
			if f.NewLeader == "" {
				return fmt.Errorf("the majority elected no leader while %s was cut off", lv.m.name)
			}
			return nil
		})
		f.Note = "packets dropped out/in: " + cut.dropped()
		cut.heal()
		f.lift(cc.now())
		w := window{master: lv.m.name, from: f.at, to: f.lifted}
		if f.NewLeader != "" {
			w.elected = f.at + time.Duration(f.ElectedAfter*float64(time.Second))
		}
		windows = append(windows, w)
		if err != nil {
			t.Errorf("partition of %s: %v", lv.m.name, err)
		}
		sc.healthy()
	})
	sc.finish(func(recs []opRecord, stale map[int]bool) []string {
		var problems []string
		for _, w := range windows {
			var minorityWrites, majorityAcks int
			for _, r := range recs {
				if r.In.Op == opGet || r.Call < w.from || r.Return >= w.to {
					continue
				}
				if r.Pinned == w.master {
					minorityWrites++
					if r.acked() {
						problems = append(problems, fmt.Sprintf("%s, cut off at t=%s, acknowledged %s of %s at resourceVersion %d (t=%s..%s)",
							w.master, w.from, r.In.Op, r.In.Key, r.Out.RV, r.Call, r.Return))
					}
				} else if r.acked() && w.elected > 0 && r.Call >= w.elected {
					majorityAcks++
				}
			}
			sc.t.Logf("cut of %s (t=%s..%s): %d writes to it, none acknowledged; %d writes acknowledged by the majority after its election",
				w.master, w.from.Round(time.Millisecond), w.to.Round(time.Millisecond), minorityWrites, majorityAcks)
			if majorityAcks == 0 {
				problems = append(problems, fmt.Sprintf("the majority acknowledged no write while %s was cut off", w.master))
			}
		}
		return problems
	})
}

// TestChaosRestartAll SIGKILLs every master at once and restarts them:
// everything acknowledged before must still be there.
func TestChaosRestartAll(t *testing.T) {
	sc := newScenario(t, "restart-all", false)
	cc := sc.cc
	sc.load(false, contended)
	sc.rounds(sc.p.restartAll, func(int) {
		lv := sc.leader(cc.live())
		var names []string
		for _, m := range cc.masters {
			names = append(names, m.name)
		}
		f := sc.inject("kill-all", strings.Join(names, ","))
		// Signal all before waiting for any, so they die together.
		for _, m := range cc.masters {
			m.mu.Lock()
			if m.cmd != nil {
				_ = m.cmd.Process.Signal(syscall.SIGKILL)
			}
			m.mu.Unlock()
		}
		for _, m := range cc.masters {
			cc.crash(m)
		}
		for _, m := range cc.masters {
			cc.restart(m)
		}
		f.lift(cc.now())
		l := sc.healthy()
		if v := sc.leader(cc.masters); v.term > lv.term {
			f.elected(l, cc.now())
		}
	})
	sc.finish()
}

// TestChaosRollingRestart restarts every master in turn, gracefully
// (SIGTERM: a leader hands leadership over first), under a write load
// without contention: every single write must be acknowledged.
func TestChaosRollingRestart(t *testing.T) {
	sc := newScenario(t, "rolling-restart", false)
	cc := sc.cc
	sc.load(false, own)
	// Each round restarts the followers first and the leader last, so that
	// every round includes a leadership hand-off.
	done := map[string]bool{}
	sc.rounds(sc.p.rollingRound*len(cc.masters), func(i int) {
		if i%len(cc.masters) == 0 {
			clear(done)
		}
		lv := sc.leader(cc.live())
		m := lv.m
		for _, o := range cc.others(lv.m) {
			if !done[o.name] {
				m = o
				break
			}
		}
		done[m.name] = true
		f := sc.inject("terminate", m.name)
		cc.terminate(m, 30*time.Second)
		cc.restart(m)
		f.lift(cc.now())
		l := sc.healthy()
		if l != lv.m {
			f.elected(l, cc.now())
		}
	})
	sc.finish(func(recs []opRecord, stale map[int]bool) []string {
		var problems []string
		for _, r := range recs {
			if r.In.Op == opGet || r.acked() {
				continue
			}
			if len(problems) < 10 {
				problems = append(problems, fmt.Sprintf("client %d: %s of %s failed at t=%s..%s: %s",
					r.Client, r.In.Op, r.In.Key, r.Call, r.Return, r.Err))
			}
		}
		sc.rep.Extra["failed_writes"] = len(problems)
		return problems
	})
}

// finish stops the load, waits for the cluster to settle, runs every check,
// reports, and fails the test on any violation.
func (sc *scenario) finish(checks ...func(recs []opRecord, stale map[int]bool) []string) {
	t, cc, w, rep := sc.t, sc.cc, sc.w, &sc.rep
	w.halt()
	end := cc.now()
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if _, err := cc.waitHealthy(90*time.Second, cc.masters); err != nil {
		fail("the cluster is not healthy at the end: %v", err)
	}
	d, err := cc.waitConverged(60 * time.Second)
	if err != nil {
		fail("the masters did not converge: %v", err)
	} else {
		rep.Converged, rep.StateHash, rep.StateIndex = true, d.sum, d.index
	}
	var maxRV uint64
	for _, o := range d.cms {
		maxRV = max(maxRV, o.RV)
	}
	if err := sc.watch.waitFor(maxRV, 30*time.Second); err != nil {
		fail("watch: %v", err)
	}
	events, werr := sc.watch.finish()
	if werr != nil {
		fail("the watch failed: %v", werr)
	}
	if err := w.finalReads(); err != nil {
		fail("%v", err)
	}
	recs := w.records()
	finals := map[string]map[string]finalObject{}
	for _, m := range cc.masters {
		// The final reads commit read barriers (server/reads.go) that a
		// master may still be applying: list again until one listing sees
		// a single index.
		var st digest
		err := poll(30*time.Second, func() error {
			var err error
			st, err = cc.stateOf(m)
			return err
		})
		if err != nil {
			fail("final state of %s: %v", m.name, err)
			continue
		}
		finals[m.name] = st.cms
	}

	var acks []time.Duration
	for _, r := range recs {
		rep.Ops++
		if r.In.Op == opGet {
			rep.Reads++
		} else {
			rep.Writes++
		}
		switch {
		case r.acked():
			rep.Acked++
			acks = append(acks, r.Return)
		case r.In.Op == opGet:
		case r.Drop:
			rep.NotApplied++
		case r.Out.Unknown:
			rep.Unknown++
		default:
			rep.Rejected++
		}
		if r.Unexpected {
			rep.Unexpected++
			if rep.Unexpected <= 5 {
				fail("unexpected error: client %d %s: %s", r.Client, describeOp(r.In, r.Out), r.Err)
			}
		}
	}
	_, rep.UnknownApplied = unknownApplied(events, recs)

	var examples []string
	rep.Lost, examples = lostWrites(recs, finals)
	for _, e := range examples {
		fail("lost: %s", e)
	}
	stale, examples := staleReads(recs)
	rep.StaleReads = len(stale)
	for _, e := range examples {
		fail("stale read: %s", e)
	}
	w.mu.Lock()
	rep.Backwards = len(w.violations)
	for i, v := range w.violations {
		if i < 10 {
			fail("session check: %s", v)
		}
	}
	w.mu.Unlock()

	final := d.cms
	if final == nil && len(finals) > 0 {
		final = finals[cc.masters[0].name]
	}
	rep.WatchEvents = len(events)
	failovers := 0
	for _, f := range rep.Faults {
		if f.WatchOn != "" && strings.Contains(f.Target, f.WatchOn) && f.Kind != "pause" && f.Kind != "partition" {
			failovers++
		}
	}
	rep.Extra["watch_failovers"] = failovers
	rep.WatchProblems = watchCheck(sc.watch, events, recs, final)
	for _, p := range rep.WatchProblems {
		fail("watch: %s", p)
	}
	timeout := 2 * time.Minute
	if sc.p.full {
		timeout = 10 * time.Minute
	}
	lin := checkLinearizable(rep.Scenario, recs, timeout)
	rep.Linearizable, rep.CheckSeconds = lin.Verdict, lin.Seconds
	switch lin.Verdict {
	case "no":
		fail("the history is not linearizable: objects %v; porcupine's visualization: %s\n%s",
			lin.BadKeys, lin.Visual, strings.Join(lin.Excerpts, "\n"))
	case "timeout":
		fail("porcupine did not decide within %s", timeout)
	}
	for _, check := range checks {
		for _, p := range check(recs, stale) {
			fail("%s", p)
		}
	}

	unavailability(acks, rep.Faults, end)
	perSecond := make([]int, int(end/time.Second)+1)
	for _, a := range acks {
		if i := int(a / time.Second); i < len(perSecond) {
			perSecond[i]++
		}
	}
	rep.Extra["acks_per_second"] = perSecond
	rep.UnavailMedian, rep.UnavailMax = medianMax(rep.Faults)
	rep.Seconds = time.Since(rep.Started).Seconds()
	rep.Problems = problems
	rep.Passed = len(problems) == 0
	sort.SliceStable(rep.Faults, func(i, j int) bool { return rep.Faults[i].at < rep.Faults[j].at })
	t.Logf("acknowledged writes per second: %v", perSecond)
	t.Logf("%s: %d operations (%d reads, %d writes: %d acknowledged, %d rejected, %d not applied, %d unknown of which %d applied); watch saw %d events across %d failovers; porcupine %s in %.1fs\n%s\n%s",
		rep.Scenario, rep.Ops, rep.Reads, rep.Writes, rep.Acked, rep.Rejected, rep.NotApplied, rep.Unknown, rep.UnknownApplied,
		rep.WatchEvents, failovers, rep.Linearizable, rep.CheckSeconds, table([]scenarioReport{*rep}), faultTable(rep.Faults))
	sc.saved = true
	saveReport(t, *rep)
	if len(problems) > 0 {
		sc.keepRecords(recs)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// keepRecords writes every operation as JSON lines next to the report, to
// investigate a failure.
func (sc *scenario) keepRecords(recs []opRecord) {
	f, err := os.CreateTemp("", "skiff-chaos-ops-"+sanitize(sc.rep.Scenario)+"-*.jsonl")
	if err != nil {
		sc.t.Logf("keep records: %v", err)
		return
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, r := range recs {
		_ = enc.Encode(map[string]any{"client": r.Client, "pinned": r.Pinned, "op": r.In.Op.String(), "key": r.In.Key,
			"value": r.In.Value, "exp_rv": r.In.ExpRV, "code": r.Out.Code.String(), "unknown": r.Out.Unknown, "drop": r.Drop,
			"rv": r.Out.RV, "got": r.Out.Value, "call": r.Call.Seconds(), "return": r.Return.Seconds(), "err": r.Err})
	}
	sc.t.Logf("every operation of the scenario kept in %s", f.Name())
}
