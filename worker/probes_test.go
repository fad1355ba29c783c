package worker

import (
	"fmt"
	"testing"
	"time"

	pb "github.com/skiff-sh/skiff/proto"
)

// readyWithin starts c's probes on pr and waits until the container is
// ready; every period in these tests is far longer than the deadline, so
// a probe that waited for its period would fail them.
func readyWithin(t *testing.T, c *pb.Container, pr *fakeProber, before func(cp *containerProbes)) {
	t.Helper()
	cp := startProbes(probeTarget{containerID: "c1", container: c}, pr, func() {}, nil)
	t.Cleanup(cp.stop)
	if before != nil {
		before(cp)
	}
	eventually(t, 10*time.Second, "container ready", func() error {
		if _, ready, _ := cp.results(); !ready {
			return fmt.Errorf("not ready after %d readiness probes", pr.callsOf(c.GetName(), probeReadiness))
		}
		return nil
	})
}

// A readiness probe that fails before the container was ever ready runs
// again well before its period, so a pod is Ready soon after it listens.
func TestReadinessProbedSoonUntilReady(t *testing.T) {
	pr := newFakeProber()
	pr.set("web", probeReadiness, false)
	c := &pb.Container{Name: "web", ReadinessProbe: &pb.Probe{PeriodSeconds: 60, FailureThreshold: 3}}
	readyWithin(t, c, pr, func(*containerProbes) {
		eventually(t, 10*time.Second, "readiness probed again", func() error {
			if n := pr.callsOf("web", probeReadiness); n < 3 {
				return fmt.Errorf("%d readiness probes", n)
			}
			return nil
		})
		pr.set("web", probeReadiness, true)
	})
}

// Readiness probes as soon as the startup probe succeeds, not a period
// later.
func TestReadinessProbesWhenStarted(t *testing.T) {
	pr := newFakeProber()
	pr.set("slow", probeStartup, false)
	c := &pb.Container{
		Name:           "slow",
		StartupProbe:   &pb.Probe{PeriodSeconds: 1, FailureThreshold: 100},
		ReadinessProbe: &pb.Probe{PeriodSeconds: 60},
	}
	readyWithin(t, c, pr, func(cp *containerProbes) {
		eventually(t, 10*time.Second, "startup probed", func() error {
			if n := pr.callsOf("slow", probeStartup); n < 1 {
				return fmt.Errorf("%d startup probes", n)
			}
			return nil
		})
		if started, _, _ := cp.results(); started {
			t.Fatal("started before its startup probe succeeded")
		}
		if n := pr.callsOf("slow", probeReadiness); n != 0 {
			t.Fatalf("readiness probed %d times before the container started", n)
		}
		pr.set("slow", probeStartup, true)
	})
}

// Without a startup probe, liveness first probes a period after the start:
// a container is not probed (and, with failureThreshold 1, killed) before
// its program could listen. Readiness, probing meanwhile, shows time passed.
func TestLivenessWaitsAPeriodFirst(t *testing.T) {
	pr := newFakeProber()
	pr.set("web", probeLiveness, false)
	pr.set("web", probeReadiness, false)
	c := &pb.Container{
		Name:           "web",
		LivenessProbe:  &pb.Probe{PeriodSeconds: 60, FailureThreshold: 1},
		ReadinessProbe: &pb.Probe{PeriodSeconds: 60},
	}
	cp := startProbes(probeTarget{containerID: "c1", container: c}, pr, func() {}, nil)
	t.Cleanup(cp.stop)
	eventually(t, 10*time.Second, "readiness probed 3 times (at once, after 250 and 500 ms)", func() error {
		if n := pr.callsOf("web", probeReadiness); n < 3 {
			return fmt.Errorf("%d readiness probes", n)
		}
		return nil
	})
	if n := pr.callsOf("web", probeLiveness); n != 0 {
		t.Errorf("liveness probed %d times within a second of the start (period 60s)", n)
	}
	if _, _, kill := cp.results(); kill != nil {
		t.Errorf("killed at start: %v", kill.reason)
	}
}
