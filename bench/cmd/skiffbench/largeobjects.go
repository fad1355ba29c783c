package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// largeObjectUpdates and largeObjectBytes are the large-object phase of the
// scale benchmark: one ConfigMap of 900 KB updated 400 times. Every version
// stays in the masters' watch event window until a bound takes it out, so
// the live heap it adds shows the bound (360 MB of versions without one).
const (
	largeObjectUpdates = 400
	largeObjectBytes   = 900 << 10
)

// benchLargeObjects reports how much the leader's live heap grows while one
// large ConfigMap is updated again and again. The masters run with
// --enable-pprof (the live heap is read from /debug/pprof/heap?gc=1).
func benchLargeObjects(ctx context.Context, c *skiffCluster, cl *client.Client, rep *Report) error {
	const bench = "scale"
	l, err := c.leader(ctx)
	if err != nil {
		return err
	}
	before, err := liveHeap(ctx, c.masters[l].httpAddr)
	if err != nil {
		return err
	}
	start := time.Now()
	var rv uint64
	for i := range largeObjectUpdates + 1 {
		cm := &pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "large", Namespace: "scale-0", ResourceVersion: rv},
			Data: map[string]string{"data": strings.Repeat(strconv.Itoa(i%10), largeObjectBytes)}}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		var resp *pb.WriteResponse
		if i == 0 {
			resp, err = cl.Create(rctx, pb.Wrap(cm))
		} else {
			resp, err = cl.Update(rctx, pb.Wrap(cm))
		}
		cancel()
		if err != nil {
			return fmt.Errorf("write %d of the large ConfigMap: %w", i, err)
		}
		rv = resp.GetObject().Meta().GetResourceVersion()
	}
	took := time.Since(start)
	after, err := liveHeap(ctx, c.masters[l].httpAddr)
	if err != nil {
		return err
	}
	rep.add(bench, fmt.Sprintf("leader live heap growth, %d updates of one %d KB ConfigMap", largeObjectUpdates, largeObjectBytes>>10),
		float64(after-before)/(1<<20), "MB", nil, fmt.Sprintf("%.0f -> %.0f MB", float64(before)/(1<<20), float64(after)/(1<<20)),
		fmt.Sprintf("%.0f MB of versions written in %.1fs; the watch event window keeps at most 256 MiB of encodings (an object and its previous version each)",
			float64(largeObjectUpdates*largeObjectBytes)/(1<<20), took.Seconds()))
	return nil
}

// liveHeap collects the garbage of the master serving pprof at addr and
// returns its heap in use after that (runtime.MemStats.HeapAlloc).
func liveHeap(ctx context.Context, addr string) (uint64, error) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	body, err := masterGet(rctx, addr, "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return 0, fmt.Errorf("read the leader's heap profile: %w", err)
	}
	defer body.Close()
	return parseHeapAlloc(body)
}

// parseHeapAlloc finds "# HeapAlloc = N" in a text heap profile.
func parseHeapAlloc(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no HeapAlloc in the heap profile")
}
