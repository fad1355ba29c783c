package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/client"
)

// TestChaosReadsAfterLeaderPause: once a paused leader runs again and a new
// leader is in place, every master must serve linearizable reads again
// within a few seconds.
//
// It fails today. A follower's read-index round forwards ReadIndex to the
// leader it knows; the Operator.ReadIndex handler of the master that gets
// it joins that master's own coalesced round (server/reads.go,
// indexCoalescer), and a round may itself be forwarding. After a pause, the
// new leader N is still running the round it started as a follower, waiting
// on the old leader O; O, resumed and still believing it leads, makes N's
// request wait for its next round; O's current round fails to verify
// leadership, so it forwards ReadIndex to N, whose handler waits for N's
// next round, behind the round waiting on O. Nobody progresses until a
// round's own timeout (2 x NoLeaderWait = 10s) breaks the cycle, and
// linearizable reads (and everything behind them) stall on every master.
func TestChaosReadsAfterLeaderPause(t *testing.T) {
	p := chaosConfig(t)
	cc := startChaosCluster(t, 3, false)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	// Two readers per master keep read-index rounds in flight everywhere.
	for _, m := range cc.masters {
		cl := cc.pinnedClient(m)
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					_, _ = cl.Get(ctx, "Namespace", "", "default", client.ReadOptions{})
					cancel()
				}
			}()
		}
	}
	const recoverWithin = 5 * time.Second
	// The cycle needs a race to go one way (the old leader must take the
	// new one's ReadIndex before it learns of the new term), so try often.
	cycles := 8
	if p.full {
		cycles = 16
	}
	for i := range cycles {
		lv, err := cc.waitLeaderAmong(30*time.Second, cc.masters)
		if err != nil {
			t.Fatal(err)
		}
		var old uint64
		for _, v := range cc.views(cc.masters, time.Second) {
			if v.m == lv {
				old = v.term
			}
		}
		cc.pause(lv)
		pausedAt := cc.now()
		// Hold the pause until the others have elected a leader (and at
		// least 2s, four election timeouts).
		err = poll(20*time.Second, func() error {
			v, err := cc.leaderOf(cc.views(cc.others(lv), 500*time.Millisecond))
			if err != nil || v.term <= old {
				return fmt.Errorf("no new leader yet")
			}
			if cc.now()-pausedAt < 2*time.Second {
				return fmt.Errorf("paused")
			}
			return nil
		})
		cc.resume(lv)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		resumed := cc.now()
		for _, m := range cc.masters {
			cl := cc.pinnedClient(m)
			err := poll(recoverWithin-(cc.now()-resumed), func() error {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_, err := cl.Get(ctx, "Namespace", "", "default", client.ReadOptions{})
				return err
			})
			if err != nil {
				t.Fatalf("cycle %d: %s paused for %s and resumed; %s still serves no linearizable read %s after the resume: %v",
					i, lv.name, resumed-pausedAt, m.name, cc.now()-resumed, err)
			}
		}
		t.Logf("cycle %d: paused %s for %s; every master served a linearizable read within %s of the resume",
			i, lv.name, (resumed - pausedAt).Round(time.Millisecond), (cc.now() - resumed).Round(time.Millisecond))
	}
}
