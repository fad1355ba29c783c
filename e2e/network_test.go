//go:build linux

package e2e

// The pod network, Services and netproxy tests (issue 5), run in the
// network lab (netlab_test.go): one master and two workers, each worker a
// host of its own in a network namespace joined by a bridge. The tests use
// the CLI as a user would: apply, get, exec, logs, scale.

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// scaleDownTarget is how soon after `skiff scale` a removed backend must
// stop receiving requests (issue 5: within one second of the change).
const scaleDownTarget = time.Second

// TestNetLab proves the lab itself: masters in the lab namespace, two
// workers in namespaces of their own registered with their lab addresses,
// a hostNetwork pod on each serving on its node's address, reachable from
// the lab network and from the other host.
func TestNetLab(t *testing.T) {
	l := startNetLab(t, netLabOptions{})
	out := l.mustCLI("", "get", "nodes", "-o", "wide")
	t.Logf("skiff get nodes -o wide:\n%s", out)

	var manifest strings.Builder
	for _, w := range l.workers {
		manifest.WriteString(helloPodYAML(helloPod{name: "host-" + w.name, node: w.name, image: l.imageRef, hostNetwork: true}))
	}
	l.mustCLI(manifest.String(), "apply", "-f", "-")
	pods := l.waitPodsReady(60*time.Second, "host-w1", "host-w2")
	for _, w := range l.workers {
		p := pods["host-"+w.name]
		if p.Status.PodIP != w.ip || p.Spec.NodeName != w.name {
			t.Errorf("hostNetwork pod host-%s: IP %s on %s, want the node's address %s on %s", w.name, p.Status.PodIP, p.Spec.NodeName, w.ip, w.name)
		}
		// Served in the worker's namespace, reachable from the lab network.
		body, err := l.httpGet(fmt.Sprintf("http://%s:8080/", w.ip))
		if err != nil || !strings.HasPrefix(body, "host-"+w.name+" from ") {
			t.Errorf("GET http://%s:8080/ from the lab namespace: %v %q", w.ip, err, body)
		}
	}
	// Host to host across the lab bridge, from inside a container.
	body, err := l.execGet("host-w1", fmt.Sprintf("http://%s:8080/", l.worker("w2").ip))
	if err != nil || !strings.HasPrefix(body, "host-w2 from ") {
		t.Errorf("host-w1 -> w2: %v %q", err, body)
	}
	// Each worker has its own namespace: nft runs there (the tables the
	// worker makes are its own).
	for _, w := range l.workers {
		if out, err := l.inWorker(w, ipBin, "-o", "addr", "show", "dev", "eth0"); err != nil || !strings.Contains(out, w.ip+"/24") {
			t.Errorf("%s's namespace: ip addr: %v\n%s", w.name, err, out)
		}
		t.Logf("nftables tables in %s's namespace: %v", w.name, nftTables(t, w.ns))
	}
}

// TestPodNetwork: pods on one node and on two different workers reach
// each other by pod IP, without NAT; pod IPs come from each node's podCIDR;
// a hostNetwork pod has the node's IP and reaches (and is reached from)
// pods on the other node.
func TestPodNetwork(t *testing.T) {
	l := startNetLab(t, netLabOptions{})
	w1, w2 := l.worker("w1"), l.worker("w2")

	var cidrs map[string]*net.IPNet
	eventually(t, 30*time.Second, func() error {
		got, err := l.podCIDRs()
		if err != nil {
			return err
		}
		cidrs = map[string]*net.IPNet{}
		for _, w := range l.workers {
			_, n, err := net.ParseCIDR(got[w.name])
			if err != nil {
				return fmt.Errorf("node %s: spec.podCIDR %q: %v", w.name, got[w.name], err)
			}
			cidrs[w.name] = n
		}
		return nil
	})
	if a, b := cidrs["w1"], cidrs["w2"]; a.Contains(b.IP) || b.Contains(a.IP) {
		t.Fatalf("pod CIDRs overlap: w1 %s, w2 %s", a, b)
	}
	t.Logf("pod CIDRs: w1 %s, w2 %s", cidrs["w1"], cidrs["w2"])

	specs := []helloPod{
		{name: "a1", node: "w1"}, {name: "a2", node: "w1"},
		{name: "b1", node: "w2"}, {name: "h2", node: "w2", hostNetwork: true},
	}
	var manifest strings.Builder
	for _, s := range specs {
		s.image = l.imageRef
		manifest.WriteString(helloPodYAML(s))
	}
	l.mustCLI(manifest.String(), "apply", "-f", "-")
	pods := l.waitPodsReady(60*time.Second, "a1", "a2", "b1", "h2")
	ip := func(name string) string { return pods[name].Status.PodIP }
	for _, s := range specs {
		got := net.ParseIP(ip(s.name))
		switch {
		case s.hostNetwork:
			if ip(s.name) != l.worker(s.node).ip {
				t.Errorf("hostNetwork pod %s: IP %s, want the node's %s", s.name, ip(s.name), l.worker(s.node).ip)
			}
		case got == nil || !cidrs[s.node].Contains(got):
			t.Errorf("pod %s on %s: IP %q is not in the node's podCIDR %s", s.name, s.node, ip(s.name), cidrs[s.node])
		}
	}
	if ip("a1") == ip("a2") {
		t.Errorf("a1 and a2 share IP %s", ip("a1"))
	}
	t.Logf("pod IPs: a1 %s, a2 %s (w1 %s); b1 %s, h2 %s (w2 %s)", ip("a1"), ip("a2"), w1.ip, ip("b1"), ip("h2"), w2.ip)

	for _, c := range []struct{ from, to, what string }{
		{"a1", "a2", "same node"},
		{"a1", "b1", "across workers"},
		{"b1", "a1", "across workers, the other way"},
		{"a1", "h2", "pod to a hostNetwork pod on the other node"},
		{"h2", "a1", "hostNetwork pod to a pod on the other node"},
	} {
		url := fmt.Sprintf("http://%s:8080/", ip(c.to))
		start := time.Now()
		eventually(t, 15*time.Second, func() error {
			body, err := l.execGet(c.from, url)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(body, c.to+" from ") {
				return fmt.Errorf("%s -> %s: answered %q", c.from, url, body)
			}
			return nil
		})
		t.Logf("%s -> %s (%s) answered after %v", c.from, c.to, c.what, time.Since(start).Round(time.Millisecond))
	}
	// Pod to pod keeps the source address (no masquerading inside the
	// cluster): b1 logged a1's request as coming from a1's IP.
	out := l.mustCLI("", "logs", "b1")
	if !strings.Contains(out, "from "+ip("a1")+":") {
		t.Errorf("b1's log does not show a request from a1's IP %s (NATed?):\n%s", ip("a1"), out)
	}
}

// TestServices: a Deployment of three behind a ClusterIP Service (targetPort
// by name) and a NodePort Service (targetPort by number). The Service gets a
// ClusterIP, Endpoints list the ready pods only, a client pod reaches the
// Service by IP, FQDN and short name and its requests spread over the
// backends, a not-ready pod matched by the selector never gets a request,
// the NodePort answers on every worker, the Service environment variables
// are set, and scaling down takes backends out of rotation within a second.
func TestServices(t *testing.T) {
	l := startNetLab(t, netLabOptions{})
	l.mustCLI(fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: hello
        image: %s
        env:
        - {name: GREETING, value: web}
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: v1
kind: Service
metadata:
  name: web-np
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 8080}
`, l.imageRef), "apply", "-f", "-")

	// A pod the selector matches whose readiness probe never succeeds (it
	// probes a port nothing listens on): it serves on 8080 like the others
	// but must never be sent a request.
	l.mustCLI(helloPodYAML(helloPod{name: "web-unready", image: l.imageRef, greeting: "web",
		labels: map[string]string{"app": "web"}, readinessPort: "9999"}), "apply", "-f", "-")

	var backends map[string]labPod // the Deployment's ready pods
	eventually(t, 90*time.Second, func() error {
		pods, err := l.pods("app=web")
		if err != nil {
			return err
		}
		backends = map[string]labPod{}
		for n, p := range pods {
			if n != "web-unready" && p.ready() && p.Status.PodIP != "" {
				backends[n] = p
			}
		}
		u := pods["web-unready"]
		if len(backends) != 3 || u.Status.Phase != "Running" || u.Status.PodIP == "" {
			return fmt.Errorf("%d of 3 replicas ready; web-unready %s with IP %q", len(backends), u.Status.Phase, u.Status.PodIP)
		}
		return nil
	})
	pods, _ := l.pods("app=web")
	unreadyIP := pods["web-unready"].Status.PodIP
	var backendIPs []string
	for _, p := range backends {
		backendIPs = append(backendIPs, p.Status.PodIP+":8080")
	}
	sort.Strings(backendIPs)

	// The ClusterIP, from the service CIDR (10.96.0.0/16 by default).
	clusterIPRE := regexp.MustCompile(`\b10\.96\.\d{1,3}\.\d{1,3}\b`)
	var clusterIP string
	eventually(t, 10*time.Second, func() error {
		out, err := l.cli("", "get", "svc", "web")
		clusterIP = clusterIPRE.FindString(out)
		if err != nil || clusterIP == "" || !regexpLine(out, "web", "ClusterIP", clusterIP, "80/TCP") {
			return fmt.Errorf("get svc web: %v\n%s", err, out)
		}
		return nil
	})
	t.Logf("service web: ClusterIP %s", clusterIP)
	nodePort := serviceNodePort(t, l, "web-np")
	t.Logf("service web-np: NodePort %d", nodePort)

	// Endpoints: the three ready pods, never web-unready.
	ipPort := regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}:\d+\b`)
	eventually(t, 15*time.Second, func() error {
		out, err := l.cli("", "get", "endpoints", "web")
		if err != nil {
			return fmt.Errorf("get endpoints web: %v\n%s", err, out)
		}
		got := ipPort.FindAllString(out, -1)
		sort.Strings(got)
		if !slices.Equal(got, backendIPs) {
			return fmt.Errorf("get endpoints web lists %v, want the ready pods %v:\n%s", got, backendIPs, out)
		}
		return nil
	})

	// A client created after the Service sees its environment variables.
	l.mustCLI(helloPodYAML(helloPod{name: "client", image: l.imageRef, labels: map[string]string{"app": "client"}}), "apply", "-f", "-")
	l.waitPodsReady(60*time.Second, "client")
	out := l.mustCLI("", "exec", "client", "--", "/hello", "env")
	for _, kv := range []string{"WEB_SERVICE_HOST=" + clusterIP, "WEB_SERVICE_PORT=80"} {
		if !slices.Contains(strings.Split(out, "\n"), kv) {
			t.Errorf("client's environment lacks %s:\n%s", kv, out)
		}
	}

	// hostOf checks an answer comes from a ready backend and returns its
	// hostname (the pod's name).
	hostOf := func(body string) (string, error) {
		host, ok := strings.CutPrefix(strings.TrimSpace(body), "web from ")
		if !ok {
			return "", fmt.Errorf("unexpected answer %q", body)
		}
		if host == "web-unready" {
			return "", fmt.Errorf("the not-ready pod web-unready (%s) received a request", unreadyIP)
		}
		return host, nil
	}
	urls := []string{
		"http://" + clusterIP + "/",
		"http://web.default.svc.cluster.local/",
		"http://web/",
	}
	for _, url := range urls {
		start := time.Now()
		eventually(t, 15*time.Second, func() error {
			body, err := l.execGet("client", url)
			if err != nil {
				return err
			}
			_, err = hostOf(body)
			return err
		})
		t.Logf("client -> %s answered after %v", url, time.Since(start).Round(time.Millisecond))
	}

	// Requests spread over the backends, and none reaches web-unready.
	seen := map[string]int{}
	for i := range 30 {
		body, err := l.execGet("client", urls[i%len(urls)])
		if err != nil {
			t.Fatal(err)
		}
		host, err := hostOf(body)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := backends[host]; !ok {
			t.Fatalf("answer from %q, which is none of the backends %v", host, keys(backends))
		}
		seen[host]++
	}
	t.Logf("30 requests through the Service went to %v", seen)
	if len(seen) < 2 {
		t.Errorf("30 requests all went to %v: the Service does not spread over its backends", seen)
	}

	// The NodePort answers on every worker's address, from the lab network
	// (a machine that is no node).
	for _, w := range l.workers {
		url := fmt.Sprintf("http://%s:%d/", w.ip, nodePort)
		eventually(t, 15*time.Second, func() error {
			body, err := l.httpGet(url)
			if err != nil {
				return err
			}
			_, err = hostOf(body)
			return err
		})
		t.Logf("NodePort %s answered", url)
	}

	// Scale to 1: the removed backends leave the rotation within
	// scaleDownTarget. Every request records when it started; the last
	// request that went anywhere but the survivor (or failed) started at
	// the latest at the moment the old backends were still in use.
	scaled := time.Now()
	l.mustCLI("", "scale", "deployment", "web", "--replicas", "1")
	type answer struct {
		at   time.Time
		host string // "" for a failed request
	}
	var answers []answer
	survivor := ""
	var endpointsAt time.Duration
	deadline := time.Now().Add(20 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("scale to 1: the requests did not settle on one backend within 20s (survivor %q); answers since the scale: %v", survivor, answers)
		}
		if survivor == "" {
			pods, err := l.pods("app=web")
			if err == nil {
				var live []string
				for n, p := range pods {
					if n != "web-unready" && p.Metadata.DeletionTimestamp == "" {
						live = append(live, n)
					}
				}
				if len(live) == 1 {
					survivor = live[0]
				}
			}
		}
		if endpointsAt == 0 {
			if out, err := l.cli("", "get", "endpoints", "web"); err == nil && len(ipPort.FindAllString(out, -1)) == 1 {
				endpointsAt = time.Since(scaled)
			}
		}
		at := time.Now()
		body, err := l.execGet("client", urls[0])
		a := answer{at: at}
		if err == nil {
			host, herr := hostOf(body)
			if herr != nil {
				t.Fatal(herr)
			}
			a.host = host
		}
		answers = append(answers, a)
		if survivor == "" || len(answers) < 10 {
			continue
		}
		settled := true
		for _, a := range answers[len(answers)-10:] {
			if a.host != survivor {
				settled = false
			}
		}
		if settled {
			break
		}
	}
	var lastElsewhere time.Duration
	for _, a := range answers {
		if a.host != survivor {
			lastElsewhere = a.at.Sub(scaled)
		}
	}
	t.Logf("scale 3 -> 1: Endpoints showed one address %v after the scale; the last request routed to a removed backend started %v after it (target %v); %d requests",
		endpointsAt.Round(time.Millisecond), lastElsewhere.Round(time.Millisecond), scaleDownTarget, len(answers))
	if lastElsewhere > scaleDownTarget {
		t.Errorf("a request started %v after `skiff scale` still went to a removed backend (or failed); want every request after %v to reach the survivor %s",
			lastElsewhere.Round(time.Millisecond), scaleDownTarget, survivor)
	}
}

// TestWorkerRestartKeepsNetwork: a worker stopped (SIGTERM) and started
// again with the same data dir keeps its pods' IPs, re-syncs its forwarding
// rules (the Service answers again, nothing is duplicated, the rules of a
// Service deleted while it was down are gone) and never hands out an IP
// twice.
func TestWorkerRestartKeepsNetwork(t *testing.T) {
	l := startNetLab(t, netLabOptions{})
	w1 := l.worker("w1")
	var manifest strings.Builder
	for _, s := range []helloPod{
		{name: "p1", node: "w1", labels: map[string]string{"app": "web"}},
		{name: "p2", node: "w2", labels: map[string]string{"app": "web"}},
		{name: "o1", node: "w2", labels: map[string]string{"app": "other"}},
		{name: "client", node: "w1"},
	} {
		s.image = l.imageRef
		manifest.WriteString(helloPodYAML(s))
	}
	manifest.WriteString(`---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: other
spec:
  selector: {app: other}
  ports:
  - {port: 81, targetPort: 8080}
`)
	l.mustCLI(manifest.String(), "apply", "-f", "-")
	pods := l.waitPodsReady(60*time.Second, "p1", "p2", "o1", "client")
	ip := func(name string) string { return pods[name].Status.PodIP }
	webIP, otherIP := serviceClusterIP(t, l, "web"), serviceClusterIP(t, l, "other")

	for _, url := range []string{"http://" + webIP + "/", "http://" + otherIP + ":81/"} {
		eventually(t, 15*time.Second, func() error {
			_, err := l.execGet("client", url)
			return err
		})
	}
	// w1's rules mention the web Service and both its endpoints, and the
	// other Service and its endpoint.
	var before string
	eventually(t, 10*time.Second, func() error {
		rs, err := l.inWorker(w1, "nft", "list", "ruleset")
		if err != nil {
			return fmt.Errorf("nft list ruleset in %s: %v\n%s", w1.ns, err, rs)
		}
		for _, s := range []string{webIP, ip("p1"), ip("p2"), otherIP, ip("o1")} {
			if countIP(rs, s) == 0 {
				return fmt.Errorf("w1's ruleset does not mention %s:\n%s", s, rs)
			}
		}
		before = rs
		return nil
	})
	beforeTables := nftTables(t, w1.ns)
	beforeVeths := vethCount(t, l, w1)

	// Stop w1; delete the other Service while it is down; start it again.
	w1.stop(t, 30*time.Second)
	// The masters see the node leave before it comes back, so that what
	// is read after the restart is what the restarted worker reported.
	eventually(t, 20*time.Second, func() error {
		out, err := l.cli("", "get", "nodes")
		if err != nil || !regexpLine(out, "w1", "NotReady") {
			return fmt.Errorf("get nodes: %v\n%s", err, out)
		}
		return nil
	})
	l.mustCLI("", "delete", "svc", "other")
	restarted := time.Now()
	w1.start()
	l.waitNodesReady(60 * time.Second)

	after := l.waitPodsReady(60*time.Second, "p1", "client")
	for _, n := range []string{"p1", "client"} {
		if got := after[n].Status.PodIP; got != ip(n) {
			t.Errorf("pod %s's IP after the restart: %s, was %s", n, got, ip(n))
		}
		if got, was := after[n].Status.ContainerStatuses[0].ContainerID, pods[n].Status.ContainerStatuses[0].ContainerID; got != was {
			t.Errorf("pod %s's container after the restart: %s, was %s (not re-adopted)", n, got, was)
		}
	}
	// Traffic in all directions works again: the Service from w1, a pod on
	// w2 from w1 and w1's pod from w2.
	for _, c := range []struct{ from, url string }{
		{"client", "http://" + webIP + "/"},
		{"client", "http://" + ip("p2") + ":8080/"},
		{"p2", "http://" + ip("p1") + ":8080/"},
	} {
		eventually(t, 15*time.Second, func() error {
			_, err := l.execGet(c.from, c.url)
			return err
		})
	}
	t.Logf("w1 restarted; Service and pods answer %v after its start", time.Since(restarted).Round(time.Millisecond))

	// The rules re-synced: the deleted Service and its endpoint are gone,
	// the web Service's rules are there exactly as often as before (no
	// duplicates), and the tables are the same.
	eventually(t, 10*time.Second, func() error {
		rs, err := l.inWorker(w1, "nft", "list", "ruleset")
		if err != nil {
			return fmt.Errorf("nft list ruleset: %v\n%s", err, rs)
		}
		for _, s := range []string{otherIP, ip("o1")} {
			if countIP(rs, s) > 0 {
				return fmt.Errorf("stale rule: w1's ruleset still mentions %s of the deleted Service other:\n%s", s, rs)
			}
		}
		for _, s := range []string{webIP, ip("p1"), ip("p2")} {
			if a, b := countIP(rs, s), countIP(before, s); a != b {
				return fmt.Errorf("w1's ruleset mentions %s %d times after the restart, %d before:\nbefore:\n%s\nafter:\n%s", s, a, b, before, rs)
			}
		}
		return nil
	})
	if got := nftTables(t, w1.ns); !slices.Equal(got, beforeTables) {
		t.Errorf("nftables tables in w1 after the restart: %v, before: %v", got, beforeTables)
	}
	if got := vethCount(t, l, w1); got != beforeVeths {
		t.Errorf("veth links in w1 after the restart: %d, before: %d", got, beforeVeths)
	}

	// A pod created after the restart gets an IP no pod has.
	l.mustCLI(helloPodYAML(helloPod{name: "p3", node: "w1", image: l.imageRef}), "apply", "-f", "-")
	p3 := l.waitPodsReady(60*time.Second, "p3")["p3"].Status.PodIP
	if p3 == ip("p1") || p3 == ip("client") {
		t.Errorf("p3 got IP %s, already held by a pod on w1 (p1 %s, client %s)", p3, ip("p1"), ip("client"))
	}

	// w1 leaves for good: restarted with --cleanup-on-exit and stopped, it
	// stops its pods and removes its bridge, veths and tables.
	w1.stop(t, 30*time.Second)
	w1.args = append(slices.Clone(w1.args), "--cleanup-on-exit")
	w1.start()
	l.waitNodesReady(60 * time.Second)
	l.waitPodsReady(60*time.Second, "p1", "client", "p3")
	w1.stop(t, 60*time.Second)
	if got := nftTables(t, w1.ns); len(got) != 0 {
		t.Errorf("nftables tables left in w1 after --cleanup-on-exit: %v", got)
	}
	if n := vethCount(t, l, w1); n != 1 { // eth0, its link to the lab bridge
		out, _ := l.inWorker(w1, ipBin, "-o", "link")
		t.Errorf("%d veth links left in w1 after --cleanup-on-exit, want only eth0:\n%s", n, out)
	}
	if out, _ := l.inWorker(w1, ipBin, "-o", "link"); strings.Contains(out, "skiff0") {
		t.Errorf("bridge skiff0 left in w1 after --cleanup-on-exit:\n%s", out)
	}
}

// helloPod describes a pod running examples/hello.
type helloPod struct {
	name, node, image string
	hostNetwork       bool
	labels            map[string]string
	// greeting defaults to the pod's name.
	greeting string
	// readinessPort is the port of the readiness probe (default "http",
	// the port hello serves on).
	readinessPort string
}

// helloPodYAML renders p as a manifest document.
func helloPodYAML(p helloPod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n", p.name)
	if len(p.labels) > 0 {
		b.WriteString("  labels:\n")
		for _, k := range keys(p.labels) {
			fmt.Fprintf(&b, "    %s: %s\n", k, p.labels[k])
		}
	}
	b.WriteString("spec:\n  terminationGracePeriodSeconds: 2\n")
	if p.node != "" {
		fmt.Fprintf(&b, "  nodeName: %s\n", p.node)
	}
	if p.hostNetwork {
		b.WriteString("  hostNetwork: true\n")
	}
	greeting, probe := p.greeting, p.readinessPort
	if greeting == "" {
		greeting = p.name
	}
	if probe == "" {
		probe = "http"
	}
	fmt.Fprintf(&b, `  containers:
  - name: hello
    image: %s
    env:
    - {name: GREETING, value: %s}
    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /healthz, port: %s}
      periodSeconds: 1
`, p.image, greeting, probe)
	return b.String()
}

// serviceClusterIP returns the Service's spec.clusterIP once allocated.
func serviceClusterIP(t *testing.T, l *netLab, name string) string {
	t.Helper()
	var ip string
	eventually(t, 10*time.Second, func() error {
		s, err := getService(l, name)
		if err != nil {
			return err
		}
		if net.ParseIP(s.Spec.ClusterIP) == nil {
			return fmt.Errorf("service %s: clusterIP %q", name, s.Spec.ClusterIP)
		}
		ip = s.Spec.ClusterIP
		return nil
	})
	return ip
}

// serviceNodePort returns the node port of the Service's first port once
// allocated, checking it is in the NodePort range.
func serviceNodePort(t *testing.T, l *netLab, name string) int {
	t.Helper()
	var port int
	eventually(t, 10*time.Second, func() error {
		s, err := getService(l, name)
		if err != nil {
			return err
		}
		if len(s.Spec.Ports) == 0 || s.Spec.Ports[0].NodePort < 30000 || s.Spec.Ports[0].NodePort > 32767 {
			return fmt.Errorf("service %s: ports %+v, want a nodePort in 30000-32767", name, s.Spec.Ports)
		}
		port = s.Spec.Ports[0].NodePort
		return nil
	})
	return port
}

type labService struct {
	Spec struct {
		ClusterIP string `json:"clusterIP"`
		Ports     []struct {
			Port     int `json:"port"`
			NodePort int `json:"nodePort"`
		} `json:"ports"`
	} `json:"spec"`
}

func getService(l *netLab, name string) (labService, error) {
	var s labService
	out, err := l.cli("", "get", "svc", name, "-o", "json")
	if err != nil {
		return s, fmt.Errorf("get svc %s: %v\n%s", name, err, out)
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("get svc %s -o json: %v\n%s", name, err, out)
	}
	return s, nil
}

// vethCount counts the veth links in w's namespace.
func vethCount(t *testing.T, l *netLab, w *labWorker) int {
	t.Helper()
	out, err := l.inWorker(w, ipBin, "-o", "link", "show", "type", "veth")
	if err != nil {
		t.Fatalf("ip link show in %s: %v\n%s", w.ns, err, out)
	}
	return strings.Count(out, "\n")
}

// countIP counts the occurrences of IP address ip in text as a whole
// address: 10.96.0.1 is not counted inside 10.96.0.10 or 110.96.0.1.
func countIP(text, ip string) int {
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	n := 0
	for i := 0; ; {
		j := strings.Index(text[i:], ip)
		if j < 0 {
			return n
		}
		at, end := i+j, i+j+len(ip)
		before := at == 0 || !(isDigit(text[at-1]) || text[at-1] == '.')
		after := end == len(text) || !isDigit(text[end])
		if before && after {
			n++
		}
		i = at + 1
	}
}

// keys returns m's keys, sorted.
func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestCountIP(t *testing.T) {
	rs := "ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.1.2:8080\n ip daddr 10.96.0.1 . 80 110.96.0.1 10.96.0.1"
	for ip, want := range map[string]int{"10.96.0.1": 2, "10.96.0.10": 1, "10.244.1.2": 1, "10.244.1.20": 0, "96.0.1": 0} {
		if got := countIP(rs, ip); got != want {
			t.Errorf("countIP(%s) = %d, want %d", ip, got, want)
		}
	}
}
