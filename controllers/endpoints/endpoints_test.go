package endpoints

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func port(name string, p int32, target string) *pb.ServicePort {
	return &pb.ServicePort{Name: name, Port: p, TargetPort: target, Protocol: "TCP"}
}

type svcOpt func(*pb.Service)

func service(name string, selector map[string]string, ports []*pb.ServicePort, opts ...svcOpt) *pb.Service {
	s := &pb.Service{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-svc-" + name, Labels: map[string]string{"team": "a"}},
		Spec:     &pb.ServiceSpec{Selector: selector, Ports: ports, ClusterIp: "10.96.0.10", Type: "ClusterIP"},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func publishNotReady(s *pb.Service) { s.Spec.PublishNotReadyAddresses = true }
func headless(s *pb.Service)        { s.Spec.ClusterIp = "None" }

type podOpt func(*pb.Pod)

// pod is a Running, Ready pod labelled app=web on node n1 with ip, whose
// container serves "http" on 8080.
func pod(name, ip string, opts ...podOpt) *pb.Pod {
	p := &pb.Pod{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, Labels: map[string]string{"app": "web"}},
		Spec: &pb.PodSpec{NodeName: "n1", Containers: []*pb.Container{{Name: "app", Image: "web",
			Ports: []*pb.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: "TCP"}}}}},
		Status: &pb.PodStatus{Phase: "Running", PodIp: ip, Conditions: []*pb.PodCondition{{Type: "Ready", Status: "True"}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func notReady(p *pb.Pod) { p.Status.Conditions = []*pb.PodCondition{{Type: "Ready", Status: "False"}} }
func unbound(p *pb.Pod)  { p.Spec.NodeName = "" }
func noIP(p *pb.Pod)     { p.Status.PodIp = "" }
func terminating(p *pb.Pod) {
	p.Metadata.DeletionTimestamp = timestamppb.New(controllertest.Epoch)
	p.Metadata.Finalizers = []string{"test/hold"}
}
func phase(ph string) podOpt { return func(p *pb.Pod) { p.Status.Phase = ph } }
func onNode(n string) podOpt { return func(p *pb.Pod) { p.Spec.NodeName = n } }
func labelled(v string) podOpt {
	return func(p *pb.Pod) { p.Metadata.Labels = map[string]string{"app": v} }
}
func noPorts(p *pb.Pod) { p.Spec.Containers[0].Ports = nil }
func withPort(name string, n int32, proto string) podOpt {
	return func(p *pb.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, &pb.ContainerPort{Name: name, ContainerPort: n, Protocol: proto})
	}
}

// render turns subsets into one line each:
// "ports=name:port/proto,... ready=ip/pod@node,... notReady=...".
func render(subsets []*pb.EndpointSubset) []string {
	addrs := func(as []*pb.EndpointAddress) string {
		var out []string
		for _, a := range as {
			s := a.GetIp() + "/" + a.GetTargetRef().GetName() + "@" + a.GetNodeName()
			if a.GetHostname() != "" {
				s += "(" + a.GetHostname() + ")"
			}
			out = append(out, s)
		}
		return strings.Join(out, ",")
	}
	var out []string
	for _, ss := range subsets {
		var ports []string
		for _, p := range ss.GetPorts() {
			ports = append(ports, fmt.Sprintf("%s:%d/%s", p.GetName(), p.GetPort(), p.GetProtocol()))
		}
		out = append(out, fmt.Sprintf("ports=%s ready=%s notReady=%s", strings.Join(ports, ","), addrs(ss.GetAddresses()), addrs(ss.GetNotReadyAddresses())))
	}
	return out
}

var web = map[string]string{"app": "web"}

func TestSubsets(t *testing.T) {
	tests := []struct {
		name string
		svc  *pb.Service
		pods []*pb.Pod
		want []string
	}{
		{
			name: "ready and not ready, sorted by IP numerically",
			svc:  service("web", web, []*pb.ServicePort{port("", 80, "8080")}),
			pods: []*pb.Pod{pod("c", "10.244.0.10"), pod("a", "10.244.0.9"), pod("b", "10.244.0.2", notReady)},
			want: []string{"ports=:8080/TCP ready=10.244.0.9/a@n1,10.244.0.10/c@n1 notReady=10.244.0.2/b@n1"},
		},
		{
			name: "empty targetPort means port",
			svc:  service("web", web, []*pb.ServicePort{port("", 80, "")}),
			pods: []*pb.Pod{pod("a", "10.244.0.1")},
			want: []string{"ports=:80/TCP ready=10.244.0.1/a@n1 notReady="},
		},
		{
			name: "named targetPort resolved per pod, pods without it left out",
			svc:  service("web", web, []*pb.ServicePort{port("web", 80, "http")}),
			pods: []*pb.Pod{pod("a", "10.244.0.1"), pod("b", "10.244.1.1", onNode("n2"), noPorts, withPort("http", 9090, "TCP")), pod("c", "10.244.0.3", noPorts)},
			want: []string{
				"ports=web:8080/TCP ready=10.244.0.1/a@n1 notReady=",
				"ports=web:9090/TCP ready=10.244.1.1/b@n2 notReady=",
			},
		},
		{
			name: "named targetPort needs the same protocol",
			svc:  service("dns", web, []*pb.ServicePort{{Name: "dns", Port: 53, TargetPort: "dns", Protocol: "UDP"}}),
			pods: []*pb.Pod{pod("a", "10.244.0.1", withPort("dns", 5353, "TCP")), pod("b", "10.244.0.2", withPort("dns", 5353, "UDP"))},
			want: []string{"ports=dns:5353/UDP ready=10.244.0.2/b@n1 notReady="},
		},
		{
			name: "pods serving different sets of ports get their own subsets",
			svc:  service("web", web, []*pb.ServicePort{port("web", 80, "http"), port("metrics", 9100, "metrics")}),
			pods: []*pb.Pod{pod("a", "10.244.0.1", withPort("metrics", 9100, "TCP")), pod("b", "10.244.0.2"), pod("c", "10.244.0.3", withPort("metrics", 9100, "TCP"), notReady)},
			want: []string{
				"ports=metrics:9100/TCP,web:8080/TCP ready=10.244.0.1/a@n1 notReady=10.244.0.3/c@n1",
				"ports=web:8080/TCP ready=10.244.0.2/b@n1 notReady=",
			},
		},
		{
			name: "unbound, without IP, terminating and finished pods are left out",
			svc:  service("web", web, []*pb.ServicePort{port("", 80, "8080")}),
			pods: []*pb.Pod{pod("ok", "10.244.0.1"), pod("u", "10.244.0.2", unbound), pod("i", "", noIP), pod("t", "10.244.0.4", terminating),
				pod("s", "10.244.0.5", phase("Succeeded")), pod("f", "10.244.0.6", phase("Failed"), notReady)},
			want: []string{"ports=:8080/TCP ready=10.244.0.1/ok@n1 notReady="},
		},
		{
			name: "publishNotReadyAddresses lists not-ready and terminating pods as ready",
			svc:  service("web", web, []*pb.ServicePort{port("", 80, "8080")}, publishNotReady),
			pods: []*pb.Pod{pod("a", "10.244.0.1", notReady), pod("t", "10.244.0.4", terminating), pod("f", "10.244.0.6", phase("Failed"))},
			want: []string{"ports=:8080/TCP ready=10.244.0.1/a@n1,10.244.0.4/t@n1 notReady="},
		},
		{
			name: "no pods, no subsets",
			svc:  service("web", web, []*pb.ServicePort{port("", 80, "8080")}),
			want: nil,
		},
		{
			name: "headless without ports lists addresses, hostname for its subdomain",
			svc:  service("db", web, nil, headless),
			pods: []*pb.Pod{pod("db-0", "10.244.0.1", func(p *pb.Pod) { p.Spec.Hostname, p.Spec.Subdomain = "db-0", "db" }), pod("x", "10.244.0.2")},
			want: []string{"ports= ready=10.244.0.1/db-0@n1(db-0),10.244.0.2/x@n1 notReady="},
		},
		{
			name: "a ClusterIP service without ports lists nothing",
			svc:  service("web", web, nil),
			pods: []*pb.Pod{pod("a", "10.244.0.1")},
			want: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The result must not depend on the order of the pods.
			for _, pods := range [][]*pb.Pod{tc.pods, reversed(tc.pods)} {
				got := render(Subsets(tc.svc, pods))
				if !slices.Equal(got, tc.want) {
					t.Fatalf("subsets:\n got %q\nwant %q", got, tc.want)
				}
			}
		})
	}
}

func reversed[T any](s []T) []T {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

func start(t *testing.T, objs ...*pb.Object) (*controllertest.Harness, *Controller) {
	t.Helper()
	h := controllertest.NewHarness(t, objs...)
	validateWrites(t, h.Fake)
	c := New(h.Env(Name))
	h.Start()
	return h, c
}

func expectActions(t *testing.T, h *controllertest.Harness, want ...string) {
	t.Helper()
	if got := h.Fake.ActionStrings("Event"); !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	h.Fake.ClearActions()
}

func expectEndpoints(t *testing.T, h *controllertest.Harness, name string, want ...string) {
	t.Helper()
	o := h.Fake.Get("Endpoints", "default", name)
	if o == nil {
		t.Fatalf("no Endpoints default/%s", name)
	}
	if got := render(o.GetEndpoints().GetSubsets()); !slices.Equal(got, want) {
		t.Fatalf("endpoints %s:\n got %q\nwant %q", name, got, want)
	}
}

func mutatePod(t *testing.T, h *controllertest.Harness, name string, opts ...podOpt) {
	t.Helper()
	if err := h.Fake.Mutate("Pod", "default", name, func(o *pb.Object) {
		for _, opt := range opts {
			opt(o.GetPod())
		}
	}); err != nil {
		t.Fatal(err)
	}
}

func ready(p *pb.Pod) { p.Status.Conditions = []*pb.PodCondition{{Type: "Ready", Status: "True"}} }

// TestReconcileScenarios walks one Service through a pod's life and the
// user's edits, checking each write (and that nothing is written when
// nothing changed).
func TestReconcileScenarios(t *testing.T) {
	h, c := start(t,
		pb.Wrap(service("web", web, []*pb.ServicePort{port("web", 80, "http")})),
		pb.Wrap(pod("a", "10.244.0.1")),
		pb.Wrap(pod("b", "10.244.0.2", notReady)),
		pb.Wrap(pod("other", "10.244.0.3", labelled("api"))),
	)
	const key = "default/web"

	h.Reconcile(c, key)
	expectActions(t, h, "create Endpoints default/web")
	expectEndpoints(t, h, "web", "ports=web:8080/TCP ready=10.244.0.1/a@n1 notReady=10.244.0.2/b@n1")
	ep := h.Fake.Get("Endpoints", "default", "web").GetEndpoints()
	refs := ep.GetMetadata().GetOwnerReferences()
	if len(refs) != 1 || refs[0].GetKind() != "Service" || refs[0].GetName() != "web" || refs[0].GetUid() != "uid-svc-web" || !refs[0].GetController() {
		t.Fatalf("owner references = %v, want the Service as controller", refs)
	}
	if ep.GetMetadata().GetLabels()["team"] != "a" {
		t.Fatalf("labels = %v, want the Service's", ep.GetMetadata().GetLabels())
	}
	a := ep.GetSubsets()[0].GetAddresses()[0]
	if tr := a.GetTargetRef(); tr.GetKind() != "Pod" || tr.GetNamespace() != "default" || tr.GetName() != "a" || tr.GetUid() != "uid-a" || a.GetNodeName() != "n1" {
		t.Fatalf("address = %v", a)
	}

	steps := []struct {
		name   string
		change func()
		want   []string // actions
		ep     []string // rendered subsets afterwards
	}{
		{"unchanged: no write", func() {}, nil,
			[]string{"ports=web:8080/TCP ready=10.244.0.1/a@n1 notReady=10.244.0.2/b@n1"}},
		{"an irrelevant pod change: no write", func() {
			mutatePod(t, h, "a", func(p *pb.Pod) { p.Metadata.Annotations = map[string]string{"x": "y"} })
		}, nil, []string{"ports=web:8080/TCP ready=10.244.0.1/a@n1 notReady=10.244.0.2/b@n1"}},
		{"pod becomes ready", func() { mutatePod(t, h, "b", ready) }, []string{"update Endpoints default/web"},
			[]string{"ports=web:8080/TCP ready=10.244.0.1/a@n1,10.244.0.2/b@n1 notReady="}},
		{"pod becomes not ready", func() { mutatePod(t, h, "a", notReady) }, []string{"update Endpoints default/web"},
			[]string{"ports=web:8080/TCP ready=10.244.0.2/b@n1 notReady=10.244.0.1/a@n1"}},
		{"pod deleted", func() { h.Fake.Remove("Pod", "default", "a") }, []string{"update Endpoints default/web"},
			[]string{"ports=web:8080/TCP ready=10.244.0.2/b@n1 notReady="}},
		{"pod starts terminating", func() { mutatePod(t, h, "b", terminating) }, []string{"update Endpoints default/web"}, nil},
		{"selector changed", func() {
			if err := h.Fake.Mutate("Service", "default", "web", func(o *pb.Object) {
				o.GetService().Spec.Selector = map[string]string{"app": "api"}
			}); err != nil {
				t.Fatal(err)
			}
		}, []string{"update Endpoints default/web"}, []string{"ports=web:8080/TCP ready=10.244.0.3/other@n1 notReady="}},
		{"target port renumbered", func() {
			if err := h.Fake.Mutate("Service", "default", "web", func(o *pb.Object) {
				o.GetService().Spec.Ports[0].TargetPort = "8443"
			}); err != nil {
				t.Fatal(err)
			}
		}, []string{"update Endpoints default/web"}, []string{"ports=web:8443/TCP ready=10.244.0.3/other@n1 notReady="}},
		{"endpoints deleted by hand: recreated", func() { h.Fake.Remove("Endpoints", "default", "web") },
			[]string{"create Endpoints default/web"}, []string{"ports=web:8443/TCP ready=10.244.0.3/other@n1 notReady="}},
		{"endpoints edited by hand: put right", func() {
			if err := h.Fake.Mutate("Endpoints", "default", "web", func(o *pb.Object) { o.GetEndpoints().Subsets = nil }); err != nil {
				t.Fatal(err)
			}
		}, []string{"update Endpoints default/web"}, []string{"ports=web:8443/TCP ready=10.244.0.3/other@n1 notReady="}},
		{"still unchanged: no write", func() {}, nil, []string{"ports=web:8443/TCP ready=10.244.0.3/other@n1 notReady="}},
	}
	for _, st := range steps {
		st.change()
		h.Reconcile(c, key)
		h.WaitForCache()
		h.Reconcile(c, key) // a second look changes nothing
		if got := h.Fake.ActionStrings("Event"); !slices.Equal(got, st.want) {
			t.Fatalf("%s: actions:\n got %q\nwant %q", st.name, got, st.want)
		}
		h.Fake.ClearActions()
		expectEndpoints(t, h, "web", st.ep...)
	}

	// The Service goes: so do its Endpoints.
	h.Fake.Remove("Service", "default", "web")
	h.Reconcile(c, key)
	expectActions(t, h, "delete Endpoints default/web")
	if h.Fake.Get("Endpoints", "default", "web") != nil {
		t.Fatal("endpoints of a deleted service remain")
	}
}

// TestSelectorlessServiceLeftAlone: Endpoints of a Service without a
// selector belong to the user, also when the Service goes.
func TestSelectorlessServiceLeftAlone(t *testing.T) {
	manual := &pb.Endpoints{
		Metadata: &pb.ObjectMeta{Name: "ext", Namespace: "default"},
		Subsets: []*pb.EndpointSubset{{Addresses: []*pb.EndpointAddress{{Ip: "192.0.2.1"}},
			Ports: []*pb.EndpointPort{{Port: 5432, Protocol: "TCP"}}}},
	}
	h, c := start(t, pb.Wrap(service("ext", nil, []*pb.ServicePort{port("", 5432, "")})), pb.Wrap(manual), pb.Wrap(pod("a", "10.244.0.1")))
	h.Reconcile(c, "default/ext")
	expectActions(t, h)
	h.Fake.Remove("Service", "default", "ext")
	h.Reconcile(c, "default/ext")
	expectActions(t, h)
	if h.Fake.Get("Endpoints", "default", "ext") == nil {
		t.Fatal("the user's endpoints were deleted")
	}
}

// TestCreateRaceIsRetried: an Endpoints object that exists although the
// cache does not show it yet (AlreadyExists) is an error for the queue to
// retry, never an overwrite.
func TestCreateRaceIsRetried(t *testing.T) {
	h, c := start(t, pb.Wrap(service("web", web, []*pb.ServicePort{port("", 80, "8080")})), pb.Wrap(pod("a", "10.244.0.1")))
	h.Fake.FailOn("create", "Endpoints", status.Error(codes.AlreadyExists, "endpoints default/web already exists"))
	if _, err := c.Reconcile(h.Context(), "default/web"); !controllers.IsAlreadyExists(err) {
		t.Fatalf("err = %v, want AlreadyExists passed on for a retry", err)
	}
}

// TestRun runs the controller's loop: handlers turn pod, Service and
// Endpoints changes into the right Endpoints.
func TestRun(t *testing.T) {
	h, c := start(t,
		pb.Wrap(service("web", web, []*pb.ServicePort{port("web", 80, "http")})),
		pb.Wrap(service("all", map[string]string{"tier": "x"}, []*pb.ServicePort{port("", 80, "8080")})),
		pb.Wrap(pod("a", "10.244.0.1")),
		pb.Wrap(pod("b", "10.244.0.2", notReady)),
	)
	ctx, cancel := context.WithCancel(h.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	endpointsAre := func(name string, want ...string) func() bool {
		return func() bool {
			o := h.Fake.Get("Endpoints", "default", name)
			return o != nil && slices.Equal(render(o.GetEndpoints().GetSubsets()), want)
		}
	}
	h.Eventually(endpointsAre("web", "ports=web:8080/TCP ready=10.244.0.1/a@n1 notReady=10.244.0.2/b@n1"), "web's endpoints")
	h.Eventually(endpointsAre("all"), "all's (empty) endpoints")

	mutatePod(t, h, "b", ready)
	h.Eventually(endpointsAre("web", "ports=web:8080/TCP ready=10.244.0.1/a@n1,10.244.0.2/b@n1 notReady="), "b to move to addresses")

	// Relabelling moves a pod from one Service to the other.
	mutatePod(t, h, "a", func(p *pb.Pod) { p.Metadata.Labels = map[string]string{"tier": "x"} })
	h.Eventually(endpointsAre("web", "ports=web:8080/TCP ready=10.244.0.2/b@n1 notReady="), "a to leave web")
	h.Eventually(endpointsAre("all", "ports=:8080/TCP ready=10.244.0.1/a@n1 notReady="), "a to join all")

	h.Fake.Remove("Endpoints", "default", "web")
	h.Eventually(endpointsAre("web", "ports=web:8080/TCP ready=10.244.0.2/b@n1 notReady="), "web's endpoints to be recreated")

	h.Fake.Remove("Pod", "default", "b")
	h.Eventually(endpointsAre("web"), "b to be removed")
}

// validateWrites makes every create and update pass the API server's
// defaulting and validation, as it would have to.
func validateWrites(t *testing.T, f *controllertest.Fake) {
	f.PrependReactor(func(a controllertest.Action) (bool, error) {
		if a.Object == nil || (a.Verb != "create" && a.Verb != "update") {
			return false, nil
		}
		o := a.Object.Clone()
		pb.SetDefaults(o)
		if err := pb.Validate(o); err != nil {
			t.Errorf("%s: invalid: %v", a, err)
			return true, status.Error(codes.InvalidArgument, err.Error())
		}
		return false, nil
	})
}
