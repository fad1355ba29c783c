package worker

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
)

// TestStatsOfRealContainers asks the masters for the usage of a node and
// of a pod of two real containers, one burning CPU under a 200m limit with
// 48 MiB allocated and one asleep, as skiff top does: the busy container's
// rate and working set show it, the idle one's rate is near zero, the node
// covers both, the request's filters select what they say, and a deleted
// pod is gone from the report.
func TestStatsOfRealContainers(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	tc := startCluster(t, clusterOptions{})
	tc.startAgent(t, "w1", e.options(), func(c *Config) { c.StatsInterval = 500 * time.Millisecond })
	tc.waitNodeReady(t, "w1", "True", 20*time.Second)

	busy := app("busy", "alloc", "48", "spin", "1h")
	busy.Resources = &pb.ResourceRequirements{Limits: map[string]string{"cpu": "200m", "memory": "256Mi"}}
	tc.create(t, testPod("top", "w1", busy, app("idle", "sleep", "1h")))
	tc.create(t, testPod("calm", "w1", app("idle", "sleep", "1h")))
	tc.waitPod(t, "top", 60*time.Second, "running", phaseIs("Running"))
	tc.waitPod(t, "calm", 60*time.Second, "running", phaseIs("Running"))

	usageOf := func(resp *pb.StatsResponse, pod, container string) *pb.ResourceUsage {
		for _, p := range resp.GetPods() {
			for _, c := range p.GetContainers() {
				if p.GetName() == pod && c.GetName() == container {
					return c.GetUsage()
				}
			}
		}
		return nil
	}
	var resp *pb.StatsResponse
	eventually(t, 30*time.Second, "the busy container's usage", func() error {
		var err error
		if resp, err = tc.api.Stats(ctxFor(t, 10*time.Second), &pb.StatsRequest{NodeName: "w1"}); err != nil {
			return err
		}
		b, idle, node := usageOf(resp, "top", "busy"), usageOf(resp, "top", "idle"), resp.GetNode()
		switch {
		case b == nil || idle == nil || usageOf(resp, "calm", "idle") == nil:
			return fmt.Errorf("containers missing: %v", resp)
		case b.GetMemoryWorkingSetBytes() < 48<<20 || b.GetMemoryWorkingSetBytes() > 256<<20:
			return fmt.Errorf("busy working set %d MiB, want 48-256", b.GetMemoryWorkingSetBytes()>>20)
		case b.GetWindow().AsDuration() < time.Second:
			return fmt.Errorf("busy rate over %v, want a window of a second or more", b.GetWindow().AsDuration())
		case b.GetUsageNanoCores() < 20e6 || b.GetUsageNanoCores() > 300e6:
			return fmt.Errorf("busy at %dm, want about its 200m limit", b.GetUsageNanoCores()/1e6)
		case idle.GetUsageNanoCores() > 20e6:
			return fmt.Errorf("idle at %dm", idle.GetUsageNanoCores()/1e6)
		case node.GetUsageCoreNanoSeconds() < b.GetUsageCoreNanoSeconds() || node.GetMemoryWorkingSetBytes() < b.GetMemoryWorkingSetBytes() ||
			node.GetUsageNanoCores() == 0 || node.GetWindow() == nil:
			return fmt.Errorf("the node's usage %v does not cover the busy container's %v", node, b)
		}
		return nil
	})
	b := usageOf(resp, "top", "busy")
	t.Logf("busy container: %dm over %v, working set %d MiB; node: %dm, working set %d MiB",
		b.GetUsageNanoCores()/1e6, b.GetWindow().AsDuration(), b.GetMemoryWorkingSetBytes()>>20,
		resp.GetNode().GetUsageNanoCores()/1e6, resp.GetNode().GetMemoryWorkingSetBytes()>>20)

	names := func(resp *pb.StatsResponse) []string {
		var out []string
		for _, p := range resp.GetPods() {
			for _, c := range p.GetContainers() {
				out = append(out, p.GetNamespace()+"/"+p.GetName()+"/"+c.GetName())
			}
		}
		return out
	}
	for _, tc2 := range []struct {
		req  *pb.StatsRequest
		want []string
	}{
		{&pb.StatsRequest{NodeName: "w1"}, []string{"default/calm/idle", "default/top/busy", "default/top/idle"}},
		{&pb.StatsRequest{Pod: "top"}, []string{"default/top/busy", "default/top/idle"}},
		{&pb.StatsRequest{NodeName: "w1", Namespace: "default", Pod: "calm"}, []string{"default/calm/idle"}},
		{&pb.StatsRequest{NodeName: "w1", Namespace: "kube-system"}, nil},
		{&pb.StatsRequest{NodeName: "w1", NodeOnly: true}, nil},
	} {
		resp, err := tc.api.Stats(ctxFor(t, 10*time.Second), tc2.req)
		if err != nil || !slices.Equal(names(resp), tc2.want) || resp.GetNode().GetMemoryUsageBytes() == 0 {
			t.Errorf("stats %v: %v %v, want %v and the node", tc2.req, names(resp), err, tc2.want)
		}
	}
	for _, tc2 := range []struct {
		req  *pb.StatsRequest
		code codes.Code
		want string
	}{
		{&pb.StatsRequest{Pod: "nope"}, codes.NotFound, `pods "default/nope"`},
		{&pb.StatsRequest{NodeName: "w2"}, codes.NotFound, `nodes "w2" not found`},
		{&pb.StatsRequest{NodeName: "w2", Pod: "top"}, codes.NotFound, "pod default/top is on node w1, not w2"},
		{&pb.StatsRequest{}, codes.InvalidArgument, "node_name or pod: required"},
	} {
		_, err := tc.api.Stats(ctxFor(t, 10*time.Second), tc2.req)
		if status.Code(err) != tc2.code || !strings.Contains(status.Convert(err).Message(), tc2.want) {
			t.Errorf("stats %v: %v, want %v %q", tc2.req, err, tc2.code, tc2.want)
		}
	}

	tc.deletePod(t, "top", gproto.Int64(1))
	tc.waitPodGone(t, "top", 30*time.Second)
	resp, err := tc.api.Stats(ctxFor(t, 10*time.Second), &pb.StatsRequest{NodeName: "w1"})
	if err != nil || !slices.Equal(names(resp), []string{"default/calm/idle"}) {
		t.Errorf("stats after deleting pod top: %v %v", names(resp), err)
	}
	tc.deletePod(t, "calm", gproto.Int64(1))
	tc.waitPodGone(t, "calm", 30*time.Second)
	e.assertClean(t)
}
