package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// promSums scrapes a master's /metrics and returns every *_sum, *_count and
// *_total sample, keyed by the sample as written ("name{labels}"). The bench's
// masters run with --insecure (skiff.go), so their endpoint is plain HTTP
// and anonymous; a master with a token serves HTTPS and wants a credential
// (client.Connection.HTTPClient builds a client for it).
func promSums(ctx context.Context, httpAddr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, err := masterGet(ctx, httpAddr, "/metrics")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		base, _, _ := strings.Cut(name, "{")
		if !strings.HasSuffix(base, "_sum") && !strings.HasSuffix(base, "_count") && !strings.HasSuffix(base, "_total") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// masterGet GETs path from a master's plain-HTTP endpoint (--insecure) and
// returns the body of a 200 answer.
func masterGet(ctx context.Context, httpAddr, path string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		// A 400 here is a master serving HTTPS (started without
		// --insecure): the bench compares plaintext against plaintext.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("GET http://%s%s: %s: %s", httpAddr, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return resp.Body, nil
}

// meanBetween is the mean of a histogram between two scrapes, in ms.
func meanBetween(before, after map[string]float64, hist, labels string) (float64, bool) {
	sum := after[hist+"_sum"+labels] - before[hist+"_sum"+labels]
	n := after[hist+"_count"+labels] - before[hist+"_count"+labels]
	if n <= 0 {
		return 0, false
	}
	return sum / n * 1000, true
}

// leaderBreakdown reports, for a write run, the client's mean latency
// beside the leader's own view: the Create handler's mean time and the
// mean time from raft.Apply to the applied result. What the handler does
// besides raft is API work (checks, defaulting, encoding); what the client
// sees beyond the handler is gRPC, the client and, for followers,
// forwarding.
func leaderBreakdown(rep *Report, what string, clients int, clientMean time.Duration, before, after map[string]float64) {
	handler, ok1 := meanBetween(before, after, "skiff_api_request_duration_seconds", `{method="Cluster/Create"}`)
	apply, ok2 := meanBetween(before, after, "skiff_raft_apply_duration_seconds", "")
	if !ok1 || !ok2 {
		return
	}
	rep.add("writes", fmt.Sprintf("%s mean latency split, %d clients", what, clients), ms(clientMean), "ms", nil, "",
		fmt.Sprintf("leader: Create handler %.2fms, of which raft.Apply->applied %.2fms; the rest is client+gRPC(+forwarding)", handler, apply))
}

// scrapeAll is promSums of every master (nil where a scrape failed).
func (c *skiffCluster) scrapeAll(ctx context.Context) []map[string]float64 {
	out := make([]map[string]float64, len(c.masters))
	for i, m := range c.masters {
		out[i], _ = promSums(ctx, m.httpAddr)
	}
	return out
}

// logBatches reports how many entries each master wrote per raft log write
// (one bolt commit, two fdatasyncs) during a run: the group commit that
// per-batch costs are divided by.
func logBatches(ctx context.Context, rep *Report, c *skiffCluster, what string, clients int, before []map[string]float64) {
	l, err := c.leader(ctx)
	if err != nil {
		return
	}
	after := c.scrapeAll(ctx)
	var parts []string
	var leader, leaderWrites float64
	for i := range c.masters {
		if before[i] == nil || after[i] == nil {
			return
		}
		const h = "skiff_raft_log_write_entries"
		n := after[i][h+"_count"] - before[i][h+"_count"]
		if n <= 0 {
			return
		}
		mean := (after[i][h+"_sum"] - before[i][h+"_sum"]) / n
		role := "follower"
		if i == l {
			role, leader, leaderWrites = "leader", mean, n
		}
		parts = append(parts, fmt.Sprintf("m%d (%s) %.1f entries in %.0f writes", i+1, role, mean, n))
	}
	rep.add("writes", fmt.Sprintf("%s entries per log write on the leader, %d clients", what, clients), leader, "", nil, "",
		strings.Join(parts, "; "))
	// Writes of different objects released together share an entry.
	const e = "skiff_raft_entry_writes"
	if n := after[l][e+"_count"] - before[l][e+"_count"]; n > 0 {
		rep.add("writes", fmt.Sprintf("%s writes per raft entry on the leader, %d clients", what, clients),
			(after[l][e+"_sum"]-before[l][e+"_sum"])/n, "", nil, "", fmt.Sprintf("%.0f entries", n))
	}
	// AppendEntries sent only to carry a commit index (to either follower):
	// news to them, but a send and a receive that writes could have carried.
	const p = "skiff_raft_commit_pushes_total"
	if _, ok := after[l][p]; ok && leaderWrites > 0 {
		pushes := after[l][p] - before[l][p]
		rep.add("writes", fmt.Sprintf("%s commit pushes per 100 log writes on the leader, %d clients", what, clients),
			100*pushes/leaderWrites, "", nil, "", fmt.Sprintf("%.0f pushes to 2 followers", pushes))
	}
}
