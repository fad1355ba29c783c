package netproxy

import (
	"flag"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	pb "github.com/skiff-sh/skiff/proto"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func eps(s ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, e := range s {
		out = append(out, netip.MustParseAddrPort(e))
	}
	return out
}

func TestTranslate(t *testing.T) {
	cip := netip.MustParseAddr("10.96.0.10")
	tests := []struct {
		name      string
		services  []*pb.Service
		endpoints []*pb.Endpoints
		want      []ServicePort
	}{
		{
			name:     "single unnamed port",
			services: []*pb.Service{testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080")},
			endpoints: []*pb.Endpoints{testEndpoints("default", "web",
				testSubset(ips("10.244.1.3", "10.244.1.2"), nil, "8080"))},
			want: []ServicePort{{Namespace: "default", Name: "web", Protocol: "TCP", ClusterIP: cip, Port: 80,
				Endpoints: eps("10.244.1.2:8080", "10.244.1.3:8080")}},
		},
		{
			name: "named ports pick their own endpoint ports",
			services: []*pb.Service{testService("default", "web", "10.96.0.10", "ClusterIP",
				"http:80->web", "metrics:9090->metrics", "dns:53/UDP->53")},
			endpoints: []*pb.Endpoints{testEndpoints("default", "web",
				testSubset(ips("10.244.1.2"), nil, "http:8080", "metrics:9100", "dns:5353/UDP"),
				testSubset(ips("10.244.2.2"), nil, "http:8081", "metrics:9101"))},
			want: []ServicePort{
				{Namespace: "default", Name: "web", PortName: "dns", Protocol: "UDP", ClusterIP: cip, Port: 53,
					Endpoints: eps("10.244.1.2:5353")},
				{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP", ClusterIP: cip, Port: 80,
					Endpoints: eps("10.244.1.2:8080", "10.244.2.2:8081")},
				{Namespace: "default", Name: "web", PortName: "metrics", Protocol: "TCP", ClusterIP: cip, Port: 9090,
					Endpoints: eps("10.244.1.2:9100", "10.244.2.2:9101")},
			},
		},
		{
			name:     "same port name of another protocol does not match",
			services: []*pb.Service{testService("default", "dns", "10.96.0.10", "ClusterIP", "dns:53/UDP->53")},
			endpoints: []*pb.Endpoints{testEndpoints("default", "dns",
				testSubset(ips("10.244.1.2"), nil, "dns:53/TCP"))},
			want: []ServicePort{{Namespace: "default", Name: "dns", PortName: "dns", Protocol: "UDP", ClusterIP: cip, Port: 53}},
		},
		{
			name:     "NodePort",
			services: []*pb.Service{testService("default", "web", "10.96.0.10", "NodePort", "80->8080:30080")},
			endpoints: []*pb.Endpoints{testEndpoints("default", "web",
				testSubset(ips("10.244.1.2"), nil, "8080"))},
			want: []ServicePort{{Namespace: "default", Name: "web", Protocol: "TCP", ClusterIP: cip, Port: 80, NodePort: 30080,
				Endpoints: eps("10.244.1.2:8080")}},
		},
		{
			name:     "a node port on a ClusterIP service is ignored",
			services: []*pb.Service{testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080:30080")},
			want:     []ServicePort{{Namespace: "default", Name: "web", Protocol: "TCP", ClusterIP: cip, Port: 80}},
		},
		{
			name:     "no Endpoints object",
			services: []*pb.Service{testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080")},
			want:     []ServicePort{{Namespace: "default", Name: "web", Protocol: "TCP", ClusterIP: cip, Port: 80}},
		},
		{
			name:     "not-ready addresses are excluded",
			services: []*pb.Service{testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080")},
			endpoints: []*pb.Endpoints{testEndpoints("default", "web",
				testSubset(ips("10.244.1.2"), ips("10.244.1.3", "10.244.1.4"), "8080"))},
			want: []ServicePort{{Namespace: "default", Name: "web", Protocol: "TCP", ClusterIP: cip, Port: 80,
				Endpoints: eps("10.244.1.2:8080")}},
		},
		{
			name:     "only not-ready addresses",
			services: []*pb.Service{testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080")},
			endpoints: []*pb.Endpoints{testEndpoints("default", "web",
				testSubset(nil, ips("10.244.1.3"), "8080"))},
			want: []ServicePort{{Namespace: "default", Name: "web", Protocol: "TCP", ClusterIP: cip, Port: 80}},
		},
		{
			name: "headless, unallocated and IPv6 services are skipped",
			services: []*pb.Service{
				testService("default", "headless", "None", "ClusterIP", "80->8080"),
				testService("default", "pending", "", "ClusterIP", "80->8080"),
				testService("default", "v6", "fd00::10", "ClusterIP", "80->8080"),
			},
			endpoints: []*pb.Endpoints{testEndpoints("default", "headless", testSubset(ips("10.244.1.2"), nil, "8080"))},
		},
		{
			name:     "endpoints of another namespace do not leak",
			services: []*pb.Service{testService("a", "web", "10.96.0.10", "ClusterIP", "80->8080")},
			endpoints: []*pb.Endpoints{testEndpoints("b", "web",
				testSubset(ips("10.244.1.2"), nil, "8080"))},
			want: []ServicePort{{Namespace: "a", Name: "web", Protocol: "TCP", ClusterIP: cip, Port: 80}},
		},
		{
			name:     "duplicate addresses across subsets count once",
			services: []*pb.Service{testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080")},
			endpoints: []*pb.Endpoints{testEndpoints("default", "web",
				testSubset(ips("10.244.1.2"), nil, "8080"), testSubset(ips("10.244.1.2"), nil, "8080"))},
			want: []ServicePort{{Namespace: "default", Name: "web", Protocol: "TCP", ClusterIP: cip, Port: 80,
				Endpoints: eps("10.244.1.2:8080")}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Translate(tc.services, tc.endpoints)
			if !reflect.DeepEqual(got.Ports, tc.want) {
				t.Errorf("Translate:\n got %+v\nwant %+v", got.Ports, tc.want)
			}
		})
	}
}

// goldenCluster is a small cluster with every case the proxy handles.
func goldenCluster() ([]*pb.Service, []*pb.Endpoints) {
	svcs := []*pb.Service{
		testService("default", "web", "10.96.0.10", "NodePort", "http:80->http:30080", "https:443->https:30443"),
		testService("default", "db", "10.96.0.20", "ClusterIP", "5432->5432"),
		testService("kube-system", "dns", "10.96.0.53", "ClusterIP", "dns:53/UDP->53", "dns-tcp:53/TCP->53"),
		testService("default", "empty", "10.96.0.30", "ClusterIP", "80->80"),
		testService("default", "headless", "None", "ClusterIP", "80->80"),
	}
	eps := []*pb.Endpoints{
		testEndpoints("default", "web",
			testSubset(ips("10.244.2.7", "10.244.1.5"), ips("10.244.1.9"), "http:8080", "https:8443")),
		testEndpoints("default", "db", testSubset(ips("10.244.1.6"), nil, "5432")),
		testEndpoints("kube-system", "dns", testSubset(ips("10.244.1.2", "10.244.2.2"), nil, "dns:53/UDP", "dns-tcp:53/TCP")),
		testEndpoints("default", "empty", testSubset(nil, ips("10.244.1.8"), "80")),
		testEndpoints("default", "headless", testSubset(ips("10.244.1.4"), nil, "80")),
	}
	return svcs, eps
}

// TestTranslateGolden checks the rendering of a whole cluster and that it
// does not depend on the order of the inputs.
func TestTranslateGolden(t *testing.T) {
	svcs, eps := goldenCluster()
	got := Translate(svcs, eps).String()
	path := filepath.Join("testdata", "translate.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -run TestTranslateGolden -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("Translate differs from %s:\n got:\n%s\nwant:\n%s", path, got, want)
	}
	for i := range 20 {
		r := rand.New(rand.NewPCG(uint64(i), 1))
		r.Shuffle(len(svcs), func(a, b int) { svcs[a], svcs[b] = svcs[b], svcs[a] })
		r.Shuffle(len(eps), func(a, b int) { eps[a], eps[b] = eps[b], eps[a] })
		for _, e := range eps {
			for _, ss := range e.Subsets {
				r.Shuffle(len(ss.Addresses), func(a, b int) { ss.Addresses[a], ss.Addresses[b] = ss.Addresses[b], ss.Addresses[a] })
			}
		}
		if again := Translate(svcs, eps).String(); again != got {
			t.Fatalf("shuffled input %d gives another result:\n%s", i, again)
		}
	}
}
