package server

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

func svcObj(name, typ, ip string, ports ...*pb.ServicePort) *pb.Object {
	if len(ports) == 0 {
		ports = []*pb.ServicePort{{Port: 80}}
	}
	return pb.Wrap(&pb.Service{
		ApiVersion: "v1", Kind: "Service",
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default"},
		Spec:     &pb.ServiceSpec{Type: typ, ClusterIp: ip, Ports: ports, Selector: map[string]string{"app": name}},
	})
}

// wantStatus checks err is a gRPC status with code and a message holding
// every one of parts.
func wantStatus(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	st := status.Convert(err)
	if err == nil || st.Code() != code {
		t.Fatalf("got %v, want %s", err, code)
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			t.Fatalf("message %q does not contain %q", st.Message(), p)
		}
	}
}

// waitDefaultNamespace waits for the new leader's "default" namespace to
// reach c's master.
func waitDefaultNamespace(t *testing.T, c pb.ClusterClient) {
	t.Helper()
	eventually(t, 20*time.Second, "namespace default", func() error {
		_, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Namespace", Name: "default"})
		return err
	})
}

func TestServiceConfig(t *testing.T) {
	good := DefaultConfig()
	good.Name, good.DataDir, good.BootstrapExpect = "m1", "/tmp/x", 1
	good.Insecure = true
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"ServiceCIDR", func(c *Config) { c.ServiceCIDR = "" }},
		{"ServiceCIDR", func(c *Config) { c.ServiceCIDR = "10.96.0.1/16" }},
		{"ServiceCIDR", func(c *Config) { c.ServiceCIDR = "10.0.0.0/8" }},
		{"ServiceCIDR", func(c *Config) { c.ServiceCIDR = "10.96.0.0/31" }},
		{"ServiceCIDR", func(c *Config) { c.ServiceCIDR = "::ffff:10.96.0.0/112" }},
		{"ServiceNodePortRange", func(c *Config) { c.ServiceNodePortRange = "30000" }},
		{"ServiceNodePortRange", func(c *Config) { c.ServiceNodePortRange = "32767-30000" }},
		{"ServiceNodePortRange", func(c *Config) { c.ServiceNodePortRange = "0-10" }},
		{"ServiceNodePortRange", func(c *Config) { c.ServiceNodePortRange = "30000-70000" }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			c := good
			tc.edit(&c)
			if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "server config: "+tc.field+":") {
				t.Fatalf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
	for _, ok := range []string{"10.96.0.0/12", "10.96.0.0/30", "fd00::/108"} {
		c := good
		c.ServiceCIDR = ok
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}

	// Picking from a tiny range finds every usable address and no other.
	for _, tc := range []struct {
		cidr string
		want []string
	}{
		{"10.96.0.0/29", []string{"10.96.0.2", "10.96.0.3", "10.96.0.4", "10.96.0.5", "10.96.0.6"}},
		{"10.96.0.0/30", []string{"10.96.0.2"}},
		{"fd00::/126", []string{"fd00::2", "fd00::3"}},
	} {
		c, err := parseServiceCIDR(tc.cidr)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			ip, ok := c.pick(func(a string) bool { return !slices.Contains(got, a) })
			if !ok {
				break
			}
			got = append(got, ip)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: picked %q, want %q", tc.cidr, got, tc.want)
		}
	}
	r, _ := parseNodePortRange("30000-30002")
	var ports []int32
	for {
		p, ok := r.pick(func(p int32) bool { return !slices.Contains(ports, p) })
		if !ok {
			break
		}
		ports = append(ports, p)
	}
	if slices.Sort(ports); !slices.Equal(ports, []int32{30000, 30001, 30002}) {
		t.Errorf("picked ports %v", ports)
	}
}

func TestServiceAllocation(t *testing.T) {
	t.Parallel()
	servers := startCluster(t, testConfigs(t, 3, 3))
	leader := waitLeader(t, servers)
	for _, ts := range servers {
		waitDefaultNamespace(t, ts.cluster())
	}

	t.Run("concurrent creates through every master get distinct values", func(t *testing.T) {
		const n, workers = 200, 8
		ctx := ctxT(t, 2*time.Minute)
		var (
			mu      sync.Mutex
			created []*pb.Service
			errs    []error
			wg      sync.WaitGroup
		)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					c := servers[i%len(servers)].cluster()
					obj := svcObj(fmt.Sprintf("svc-%d", i), "ClusterIP", "")
					if i%4 == 0 {
						obj = svcObj(fmt.Sprintf("svc-%d", i), "NodePort", "",
							&pb.ServicePort{Name: "http", Port: 80}, &pb.ServicePort{Name: "https", Port: 443})
					}
					resp, err := c.Create(ctx, &pb.WriteRequest{Object: obj})
					mu.Lock()
					if err != nil {
						errs = append(errs, fmt.Errorf("svc-%d: %w", i, err))
					} else {
						created = append(created, resp.GetObject().GetService())
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("%d creates failed, first: %v", len(errs), errs[0])
		}
		cidr := netip.MustParsePrefix(DefaultServiceCIDR)
		ips, ports := map[string]string{}, map[int32]string{}
		for _, svc := range created {
			name, spec := svc.GetMetadata().GetName(), svc.GetSpec()
			ip := spec.GetClusterIp()
			a, err := netip.ParseAddr(ip)
			if err != nil || !cidr.Contains(a) || a == cidr.Addr() || a == cidr.Addr().Next() || a.String() == "10.96.255.255" {
				t.Fatalf("%s: clusterIP %q is not a usable address of %s", name, ip, cidr)
			}
			if !slices.Equal(spec.GetClusterIps(), []string{ip}) {
				t.Fatalf("%s: clusterIPs %q, want [%s]", name, spec.GetClusterIps(), ip)
			}
			if other, dup := ips[ip]; dup {
				t.Fatalf("%s and %s both got %s", name, other, ip)
			}
			ips[ip] = name
			for _, p := range spec.GetPorts() {
				np := p.GetNodePort()
				switch {
				case spec.GetType() != "NodePort" && np != 0:
					t.Fatalf("%s: ClusterIP service got node port %d", name, np)
				case spec.GetType() != "NodePort":
				case np < 30000 || np > 32767:
					t.Fatalf("%s: node port %d out of range", name, np)
				case ports[np] != "":
					t.Fatalf("%s and %s both got node port %d", name, ports[np], np)
				default:
					ports[np] = name
				}
			}
		}
		if len(ips) != n || len(ports) != 2*n/4 {
			t.Fatalf("%d IPs and %d node ports, want %d and %d", len(ips), len(ports), n, 2*n/4)
		}
		// Every master's store agrees.
		for _, ts := range servers {
			eventually(t, 10*time.Second, ts.cfg.Name+" sees every service", func() error {
				l, err := pb.CollectList(ts.cluster().List(ctx, &pb.ListRequest{Kind: "Service", Namespace: "default"}))
				if err != nil {
					return err
				}
				if len(l.GetItems()) < n {
					return fmt.Errorf("%d services", len(l.GetItems()))
				}
				for _, o := range l.GetItems() {
					if s := o.GetService(); ips[s.GetSpec().GetClusterIp()] != s.GetMetadata().GetName() {
						return fmt.Errorf("%s has %s", s.GetMetadata().GetName(), s.GetSpec().GetClusterIp())
					}
				}
				return nil
			})
		}
	})

	f := followers(servers, leader)[0].cluster()
	ctx := ctxT(t, time.Minute)
	// The random picks above may hold the values chosen below: free them.
	for i := range 200 { // the subtest's n
		if _, err := f.Delete(ctx, &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "Service", Namespace: "default", Name: fmt.Sprintf("svc-%d", i)}}); err != nil && status.Code(err) != codes.NotFound {
			t.Fatal(err)
		}
	}
	web, err := f.Create(ctx, &pb.WriteRequest{Object: svcObj("web", "NodePort", "10.96.200.7",
		&pb.ServicePort{Name: "http", Port: 80, NodePort: 31080}, &pb.ServicePort{Name: "https", Port: 443})})
	if err != nil {
		t.Fatal(err)
	}
	spec := web.GetObject().GetService().GetSpec()
	if spec.GetClusterIp() != "10.96.200.7" || spec.Ports[0].GetNodePort() != 31080 || spec.Ports[1].GetNodePort() == 0 {
		t.Fatalf("user-chosen values not honoured: %v", spec)
	}
	webHTTPS := spec.Ports[1].GetNodePort()

	t.Run("user-chosen values taken or out of range", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			obj   *pb.Object
			parts []string
		}{
			{"taken IP", svcObj("bad", "ClusterIP", "10.96.200.7"),
				[]string{`spec.clusterIP: Invalid value: "10.96.200.7": provided IP is already allocated`}},
			{"IP outside the CIDR", svcObj("bad", "ClusterIP", "10.97.0.5"),
				[]string{`spec.clusterIP: Invalid value: "10.97.0.5"`, "is not in the valid range 10.96.0.0/16"}},
			{"broadcast IP", svcObj("bad", "ClusterIP", "10.96.255.255"), []string{"is not in the valid range"}},
			{"taken node port", svcObj("bad", "NodePort", "", &pb.ServicePort{Port: 80, NodePort: 31080}),
				[]string{"spec.ports[0].nodePort: Invalid value: 31080: provided port is already allocated"}},
			{"taken node port, picked one too", svcObj("bad", "NodePort", "", &pb.ServicePort{Name: "a", Port: 80}, &pb.ServicePort{Name: "b", Port: 81, NodePort: webHTTPS}),
				[]string{fmt.Sprintf("spec.ports[1].nodePort: Invalid value: %d: provided port is already allocated", webHTTPS)}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, ts := range servers {
					_, err := ts.cluster().Create(ctx, &pb.WriteRequest{Object: tc.obj})
					wantStatus(t, err, codes.InvalidArgument, tc.parts...)
					_, err = ts.cluster().Apply(ctx, &pb.WriteRequest{Object: tc.obj})
					wantStatus(t, err, codes.InvalidArgument, tc.parts...)
				}
				_, err := leader.cluster().Get(ctx, &pb.GetRequest{Kind: "Service", Namespace: "default", Name: "bad"})
				wantStatus(t, err, codes.NotFound)
			})
		}
	})

	t.Run("updates keep allocations", func(t *testing.T) {
		// Re-applying the manifest (no clusterIP, no node port for https).
		manifest := svcObj("web", "NodePort", "", &pb.ServicePort{Name: "http", Port: 80, NodePort: 31080}, &pb.ServicePort{Name: "https", Port: 443})
		resp, err := f.Apply(ctx, &pb.WriteRequest{Object: manifest})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetObject().GetService().GetSpec(); got.GetClusterIp() != "10.96.200.7" || got.Ports[1].GetNodePort() != webHTTPS || resp.GetAction() != "unchanged" {
			t.Fatalf("re-apply (%s) changed allocations: %v", resp.GetAction(), got)
		}
		// An update of the stored object without them.
		cur := resp.GetObject().Clone()
		s := cur.GetService().Spec
		s.ClusterIp, s.ClusterIps, s.Ports[0].NodePort, s.Ports[1].NodePort = "", nil, 0, 0
		cur.Meta().Labels = map[string]string{"v": "2"}
		resp, err = f.Update(ctx, &pb.WriteRequest{Object: cur})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetObject().GetService().GetSpec(); got.GetClusterIp() != "10.96.200.7" || got.Ports[0].GetNodePort() != 31080 || got.Ports[1].GetNodePort() != webHTTPS {
			t.Fatalf("update without allocations lost them: %v", got)
		}
		// clusterIP is immutable.
		cur = resp.GetObject().Clone()
		cur.GetService().Spec.ClusterIp, cur.GetService().Spec.ClusterIps = "10.96.200.8", nil
		_, err = f.Update(ctx, &pb.WriteRequest{Object: cur})
		wantStatus(t, err, codes.InvalidArgument, `spec.clusterIP: Invalid value: "10.96.200.8": field is immutable`)

		// NodePort -> ClusterIP frees the node ports; back allocates new ones.
		resp, err = f.Apply(ctx, &pb.WriteRequest{Object: svcObj("web", "ClusterIP", "", &pb.ServicePort{Name: "http", Port: 80}, &pb.ServicePort{Name: "https", Port: 443})})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetObject().GetService().GetSpec(); got.GetClusterIp() != "10.96.200.7" || got.Ports[0].GetNodePort() != 0 || got.Ports[1].GetNodePort() != 0 {
			t.Fatalf("NodePort -> ClusterIP: %v", got)
		}
		if _, err := f.Create(ctx, &pb.WriteRequest{Object: svcObj("takes-31080", "NodePort", "", &pb.ServicePort{Port: 80, NodePort: 31080})}); err != nil {
			t.Fatalf("freed node port not reusable: %v", err)
		}
		resp, err = f.Apply(ctx, &pb.WriteRequest{Object: svcObj("web", "NodePort", "", &pb.ServicePort{Name: "http", Port: 80}, &pb.ServicePort{Name: "https", Port: 443})})
		if err != nil {
			t.Fatal(err)
		}
		got := resp.GetObject().GetService().GetSpec()
		if got.Ports[0].GetNodePort() == 0 || got.Ports[1].GetNodePort() == 0 || got.Ports[0].GetNodePort() == 31080 || got.Ports[0].GetNodePort() == got.Ports[1].GetNodePort() {
			t.Fatalf("ClusterIP -> NodePort: %v", got)
		}
	})

	t.Run("headless gets no IP", func(t *testing.T) {
		for _, name := range []string{"headless-1", "headless-2"} {
			resp, err := f.Create(ctx, &pb.WriteRequest{Object: svcObj(name, "ClusterIP", "None")})
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetObject().GetService().GetSpec(); got.GetClusterIp() != "None" || !slices.Equal(got.GetClusterIps(), []string{"None"}) {
				t.Fatalf("headless: %v", got)
			}
		}
	})

	t.Run("delete frees the IP", func(t *testing.T) {
		if _, err := f.Delete(ctx, &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "Service", Namespace: "default", Name: "web"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Create(ctx, &pb.WriteRequest{Object: svcObj("web-again", "ClusterIP", "10.96.200.7")}); err != nil {
			t.Fatalf("freed IP not reusable: %v", err)
		}
	})
}

func TestServiceCIDRExhausted(t *testing.T) {
	t.Parallel()
	cfg := singleConfig(t)
	cfg.ServiceCIDR = "10.96.0.0/29"
	cfg.ServiceNodePortRange = "30000-30004"
	ts := startServer(t, cfg)
	waitLeader(t, []*testServer{ts})
	c := ts.cluster()
	waitDefaultNamespace(t, c)
	ctx := ctxT(t, time.Minute)

	// Five usable addresses (.2-.6) and five ports, taken by concurrent
	// creates: collisions are picked again, not failed.
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Create(ctx, &pb.WriteRequest{Object: svcObj(fmt.Sprintf("s%d", i), "NodePort", "")})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("s%d: %v", i, err)
		}
	}
	l, err := pb.CollectList(c.List(ctx, &pb.ListRequest{Kind: "Service", Namespace: "default"}))
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, o := range l.GetItems() {
		ips = append(ips, o.GetService().GetSpec().GetClusterIp())
	}
	slices.Sort(ips)
	if want := []string{"10.96.0.2", "10.96.0.3", "10.96.0.4", "10.96.0.5", "10.96.0.6"}; !slices.Equal(ips, want) {
		t.Fatalf("IPs %q, want %q", ips, want)
	}

	_, err = c.Create(ctx, &pb.WriteRequest{Object: svcObj("one-too-many", "ClusterIP", "")})
	wantStatus(t, err, codes.ResourceExhausted, "no free IP in service CIDR 10.96.0.0/29", "delete unused services or widen --service-cluster-ip-range")
	// The reserved first host may still be chosen explicitly (for the
	// kubernetes Service); its node port cannot be found.
	_, err = c.Create(ctx, &pb.WriteRequest{Object: svcObj("np", "NodePort", "10.96.0.1")})
	wantStatus(t, err, codes.ResourceExhausted, "no free node port in range 30000-30004", "--service-node-port-range")
	_, err = c.Create(ctx, &pb.WriteRequest{Object: svcObj("np", "NodePort", "10.96.0.1", &pb.ServicePort{Port: 80, NodePort: 30005})})
	wantStatus(t, err, codes.InvalidArgument, "spec.ports[0].nodePort: Invalid value: 30005: provided port is not in the valid range 30000-30004")

	if _, err := c.Delete(ctx, &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "Service", Namespace: "default", Name: "s3"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, &pb.WriteRequest{Object: svcObj("one-too-many", "NodePort", "")}); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
	if _, err := c.Create(ctx, &pb.WriteRequest{Object: svcObj("kubernetes", "ClusterIP", "10.96.0.1")}); err != nil {
		t.Fatalf("the reserved first host: %v", err)
	}
}

func TestServiceRepick(t *testing.T) {
	ipErr := &fsm.AllocationError{Object: `services "default/a"`, Field: "spec.clusterIP", Value: `"10.96.0.5"`}
	portErr := &fsm.AllocationError{Object: `services "default/a"`, Field: "spec.ports[1].nodePort", Value: "30001"}
	wrapped := fmt.Errorf("apply: %w", portErr)
	for _, tc := range []struct {
		name  string
		alloc *serviceAlloc
		err   error
		want  bool
	}{
		{"picked IP taken", &serviceAlloc{ip: true}, ipErr, true},
		{"user's IP taken", &serviceAlloc{ports: []int{1}}, ipErr, false},
		{"picked port taken", &serviceAlloc{ports: []int{0, 1}}, wrapped, true},
		{"user's port taken", &serviceAlloc{ip: true, ports: []int{0}}, wrapped, false},
		{"not a service", nil, ipErr, false},
		{"another error", &serviceAlloc{ip: true}, fsm.ErrConflict, false},
	} {
		if got := tc.alloc.repick(tc.err); got != tc.want {
			t.Errorf("%s: repick = %v, want %v", tc.name, got, tc.want)
		}
	}
	if st := status.Convert(fsmStatus(ipErr)); st.Code() != codes.InvalidArgument {
		t.Errorf("an allocation error maps to %s, want InvalidArgument", st.Code())
	}
}
