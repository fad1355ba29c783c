package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/fsm"
	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

// fakeObjects is an objectReader over a few pods.
type fakeObjects struct{ pods []*pb.Pod }

func (f fakeObjects) Get(kind, namespace, name string) (*pb.Object, error) {
	for _, p := range f.pods {
		if kind == "Pod" && p.GetMetadata().GetNamespace() == namespace && p.GetMetadata().GetName() == name {
			return pb.Wrap(p), nil
		}
	}
	return nil, fsm.ErrNotFound
}

func (f fakeObjects) List(q fsm.Query) ([]*pb.Object, uint64, error) {
	node, _ := strings.CutPrefix(q.FieldSelector, "spec.nodeName=")
	var out []*pb.Object
	for _, p := range f.pods {
		if q.Kind == "Pod" && p.GetMetadata().GetNamespace() == q.Namespace && p.GetSpec().GetNodeName() == node {
			out = append(out, pb.Wrap(p))
		}
	}
	return out, 1, nil
}

func TestPrincipalOf(t *testing.T) {
	for _, tc := range []struct {
		id   pki.Identity
		want principal
		call string
	}{
		{pki.Identity{CommonName: "master:m1", Orgs: []string{pki.OrgMaster}}, principal{role: RoleMaster, name: "master:m1"}, "cn=master:m1"},
		{pki.Identity{CommonName: "admin:root", Orgs: []string{pki.OrgAdmin}}, principal{role: RoleAdmin, name: "admin:root"}, "cn=admin:root"},
		{pki.Identity{CommonName: "system:node:w1", Orgs: []string{pki.OrgNode}}, principal{role: RoleNode, name: "w1"}, "cn=system:node:w1"},
		{pki.Identity{CommonName: "w1", Orgs: []string{pki.OrgNode}}, principal{name: "w1"}, "cn=w1"},
		{pki.Identity{CommonName: "x", Orgs: []string{"other"}}, principal{name: "x"}, "cn=x"},
	} {
		got := principalOf(tc.id)
		if got != tc.want || got.caller() != tc.call {
			t.Errorf("principalOf(%v) = %+v (%s), want %+v (%s)", tc.id, got, got.caller(), tc.want, tc.call)
		}
	}
	if c := (principal{role: RoleViewer, name: "abc123", token: true}).caller(); c != "token:abc123" {
		t.Errorf("token caller %q", c)
	}
}

func TestAuthorize(t *testing.T) {
	pod := func(name, node string, mutate func(*pb.PodSpec)) *pb.Pod {
		p := &pb.Pod{Metadata: &pb.ObjectMeta{Namespace: "default", Name: name},
			Spec: &pb.PodSpec{NodeName: node, Containers: []*pb.Container{{Name: "c", Image: "i"}}}}
		if mutate != nil {
			mutate(p.Spec)
		}
		return p
	}
	objs := fakeObjects{pods: []*pb.Pod{
		pod("web-1", "w1", func(s *pb.PodSpec) {
			s.Volumes = []*pb.Volume{{Name: "v", Secret: &pb.SecretVolumeSource{SecretName: "vol-secret"}}, {Name: "c", ConfigMap: &pb.ConfigMapVolumeSource{Name: "vol-cm"}}}
		}),
		pod("web-2", "w1", func(s *pb.PodSpec) {
			s.InitContainers = []*pb.Container{{Name: "init", Env: []*pb.EnvVar{{Name: "A", ValueFrom: &pb.EnvVarSource{SecretKeyRef: &pb.SecretKeySelector{Name: "env-secret", Key: "k"}}}}}}
			s.Containers[0].EnvFrom = []*pb.EnvFromSource{{ConfigMapRef: &pb.ConfigMapEnvSource{Name: "envfrom-cm"}}}
		}),
		pod("db-1", "w2", func(s *pb.PodSpec) {
			s.Volumes = []*pb.Volume{{Name: "v", Secret: &pb.SecretVolumeSource{SecretName: "db-secret"}}}
		}),
		pod("pending", "", nil),
	}}
	admin := principal{role: RoleAdmin, name: "admin:root"}
	master := principal{role: RoleMaster, name: "master:m1"}
	viewer := principal{role: RoleViewer, name: "abc123", token: true}
	ctrl := principal{role: RoleController, name: "ctl456", token: true}
	w1 := principal{role: RoleNode, name: "w1"}
	norole := principal{name: "stranger"}
	a := func(verb, kind, ns, name string) action {
		return action{verb: verb, kind: kind, namespace: ns, name: name}
	}
	for _, tc := range []struct {
		p    principal
		a    action
		want string // "" allowed, else a substring of the PermissionDenied message
		code codes.Code
	}{
		{admin, a("delete", "Secret", "default", "s"), "", 0},
		{admin, a("snapshot-save", "", "", ""), "", 0},
		{master, a("update", "Node", "", "w2"), "", 0},
		{master, a("exec", "", "", ""), "", 0},

		{viewer, a("list", "Pod", "", ""), "", 0},
		{viewer, a("watch", "deployments", "default", ""), "", 0},
		{viewer, a("get", "Node", "", "w1"), "", 0},
		{viewer, a("status", "", "", ""), "", 0},
		{viewer, a("logs", "Pod", "default", "web-1"), "", 0},
		{viewer, a("stats", "Pod", "default", "web-1"), "", 0},
		{viewer, a("stats", "Node", "", "w1"), "", 0},
		{ctrl, a("stats", "Pod", "", ""), "", 0},
		{viewer, a("get", "Secret", "default", "s"), `viewer token "abc123" may not get secrets "default/s": role viewer may not read Secrets`, codes.PermissionDenied},
		{viewer, a("list", "secret", "", ""), `may not list secrets: role viewer may not read Secrets`, codes.PermissionDenied},
		{viewer, a("create", "Pod", "default", "p"), `viewer token "abc123" may not create pods "default/p": role viewer is read-only`, codes.PermissionDenied},
		{viewer, a("delete", "ConfigMap", "default", "c"), "role viewer is read-only", codes.PermissionDenied},
		{viewer, a("snapshot-save", "", "", ""), "read-only", codes.PermissionDenied},
		{viewer, a("exec", "", "", ""), "read-only", codes.PermissionDenied},
		{viewer, a("portforward", "", "", ""), "read-only", codes.PermissionDenied},
		{ctrl, a("portforward", "", "", ""), "may not make operator calls, exec or port-forward", codes.PermissionDenied},
		{master, a("portforward", "", "", ""), "", 0},
		{viewer, a("get", "Nope", "", "x"), "", 0}, // the handler names the kinds

		{ctrl, a("watch", "Pod", "", ""), "", 0},
		{ctrl, a("status", "", "", ""), "", 0},
		{ctrl, a("create", "Pod", "default", "p"), "", 0},
		{ctrl, a("updateStatus", "Deployment", "default", "d"), "", 0},
		{ctrl, a("bind", "Pod", "default", "p"), "", 0},
		{ctrl, a("delete", "ReplicaSet", "default", "r"), "", 0},
		{ctrl, a("apply", "Endpoints", "default", "e"), "", 0},
		{ctrl, a("get", "Secret", "default", "s"), "", 0}, // without its data: redactSecrets
		{ctrl, a("watch", "Secret", "", ""), "", 0},
		{ctrl, a("create", "Secret", "default", "s"), "role controller writes only workload kinds", codes.PermissionDenied},
		{ctrl, a("update", "Node", "", "w1"), "role controller writes only workload kinds", codes.PermissionDenied},
		{ctrl, a("snapshot-save", "", "", ""), "may not make operator calls", codes.PermissionDenied},
		{ctrl, a("remove-peer", "", "", ""), "may not make operator calls", codes.PermissionDenied},
		{ctrl, a("transfer-leadership", "", "", ""), "may not make operator calls", codes.PermissionDenied},

		// Node authorizer.
		{w1, a("list", "Pod", "", ""), "", 0},
		{w1, a("watch", "Service", "", ""), "", 0},
		{w1, a("list", "Endpoints", "", ""), "", 0},
		{w1, a("get", "Node", "", "w2"), "", 0},
		{w1, a("get", "Secret", "default", "vol-secret"), "", 0},
		{w1, a("get", "ConfigMap", "default", "vol-cm"), "", 0},
		{w1, a("get", "Secret", "default", "env-secret"), "", 0},
		{w1, a("get", "ConfigMap", "default", "envfrom-cm"), "", 0},
		{w1, a("get", "Secret", "default", "db-secret"), `node "w1" may not get secrets "default/db-secret": no pod bound to node "w1" references it`, codes.PermissionDenied},
		{w1, a("get", "ConfigMap", "default", "vol-secret"), "no pod bound", codes.PermissionDenied},
		{w1, a("get", "Secret", "other", "vol-secret"), "no pod bound", codes.PermissionDenied},
		{w1, a("list", "Secret", "default", ""), "only get ConfigMaps and Secrets that its pods reference", codes.PermissionDenied},
		{w1, a("watch", "ConfigMap", "", ""), "only get ConfigMaps and Secrets", codes.PermissionDenied},
		// NodeRestriction.
		{w1, a("create", "Node", "", "w1"), "", 0},
		{w1, a("updateStatus", "Node", "", "w1"), "", 0},
		{w1, a("update", "Node", "", "w1"), "", 0},
		{w1, a("updateStatus", "Node", "", "w2"), `node "w1" may not updateStatus nodes "w2": a node may only write its own Node object`, codes.PermissionDenied},
		{w1, a("delete", "Node", "", "w1"), "write only its own", codes.PermissionDenied},
		{w1, a("get", "Lease", "kube-node-lease", "w1"), "", 0},
		{w1, a("create", "leases", "kube-node-lease", "w1"), "", 0},
		{w1, a("update", "Lease", "kube-node-lease", "w1"), "", 0},
		{w1, a("update", "Lease", "kube-node-lease", "w2"), `node "w1" may not update leases "kube-node-lease/w2": a node's Lease is "w1" in namespace "kube-node-lease"`, codes.PermissionDenied},
		{w1, a("create", "Lease", "default", "w1"), `a node's Lease is "w1" in namespace "kube-node-lease"`, codes.PermissionDenied},
		{w1, a("delete", "Lease", "kube-node-lease", "w1"), "a node may only get, create and update its own Lease", codes.PermissionDenied},
		{w1, a("list", "Lease", "kube-node-lease", ""), "a node may only get, create and update its own Lease", codes.PermissionDenied},
		{ctrl, a("update", "Lease", "default", "my-controller"), "", 0},
		{w1, a("updateStatus", "Pod", "default", "web-1"), "", 0},
		{w1, a("delete", "Pod", "default", "web-2"), "", 0},
		{w1, a("updateStatus", "Pod", "default", "db-1"), `node "w1" may not updateStatus pods "default/db-1": the pod is bound to node "w2"`, codes.PermissionDenied},
		{w1, a("delete", "Pod", "default", "db-1"), `the pod is bound to node "w2"`, codes.PermissionDenied},
		{w1, a("updateStatus", "Pod", "default", "pending"), "the pod is not bound to a node", codes.PermissionDenied},
		{w1, a("delete", "Pod", "default", "gone"), `pods "default/gone" not found`, codes.NotFound},
		{w1, a("update", "Pod", "default", "web-1"), "only update the status of pods bound to it", codes.PermissionDenied},
		{w1, a("create", "Pod", "default", "p"), "only update the status of pods bound to it", codes.PermissionDenied},
		{w1, a("bind", "Pod", "default", "pending"), "only update the status", codes.PermissionDenied},
		{w1, a("create", "Event", "default", "e"), "", 0},
		{w1, a("update", "Event", "default", "e"), "", 0}, // a repeat's count
		{w1, a("delete", "Event", "default", "e"), "a node may not delete events", codes.PermissionDenied},
		{w1, a("create", "Deployment", "default", "d"), "a node may not create deployments", codes.PermissionDenied},
		{w1, a("list", "ReplicaSet", "", ""), "a node may not list replicasets", codes.PermissionDenied},
		{w1, a("status", "", "", ""), "may not make operator calls", codes.PermissionDenied},
		{w1, a("logs", "Pod", "default", "web-1"), "only update the status", codes.PermissionDenied},
		{w1, a("stats", "Pod", "default", "web-1"), `node "w1" may not stats pods "default/web-1": a node may not read the usage`, codes.PermissionDenied},
		{w1, a("stats", "Node", "", "w1"), `node "w1" may not stats nodes "w1": a node may not read the usage`, codes.PermissionDenied},
		{norole, a("stats", "Node", "", "w1"), "the certificate names no role", codes.PermissionDenied},

		{norole, a("get", "Pod", "default", "x"), `certificate "stranger" may not get pods "default/x": the certificate names no role`, codes.PermissionDenied},
	} {
		err := authorize(tc.p, tc.a, objs)
		if tc.want == "" && tc.code == 0 {
			if err != nil {
				t.Errorf("%v %+v: %v, want allowed", tc.p, tc.a, err)
			}
			continue
		}
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
			t.Errorf("%v %+v: %v, want %v containing %q", tc.p, tc.a, err, tc.code, tc.want)
		}
	}
}

func TestActionsOf(t *testing.T) {
	acts, ok := actionsOf(pb.Cluster_Bind_FullMethodName, &pb.BindRequest{Binds: []*pb.BindOp{
		{Namespace: "default", Name: "a", NodeName: "w1"}, {Namespace: "default", Name: "b", NodeName: "w1"}}})
	if !ok || len(acts) != 2 || acts[1] != (action{verb: "bind", kind: "Pod", namespace: "default", name: "b"}) {
		t.Fatalf("bind: %+v %v", acts, ok)
	}
	acts, ok = actionsOf(pb.Cluster_UpdateStatus_FullMethodName, &pb.WriteRequest{Object: pb.Wrap(&pb.Node{Metadata: &pb.ObjectMeta{Name: "w1"}})})
	if !ok || acts[0] != (action{verb: "updateStatus", kind: "Node", name: "w1"}) {
		t.Fatalf("updateStatus: %+v %v", acts, ok)
	}
	acts, ok = actionsOf(pb.Cluster_Watch_FullMethodName, &pb.WatchRequest{Kind: "pods", FieldSelector: "spec.nodeName=w1"})
	if !ok || acts[0] != (action{verb: "watch", kind: "pods", fieldSelector: "spec.nodeName=w1"}) {
		t.Fatalf("watch: %+v %v", acts, ok)
	}
	for _, tc := range []struct {
		req  *pb.StatsRequest
		want action
	}{
		{&pb.StatsRequest{NodeName: "w1", NodeOnly: true}, action{verb: "stats", kind: "Node", name: "w1"}},
		{&pb.StatsRequest{NodeName: "w1"}, action{verb: "stats", kind: "Node", name: "w1"}},
		{&pb.StatsRequest{NodeName: "w1", Namespace: "prod"}, action{verb: "stats", kind: "Pod", namespace: "prod"}},
		{&pb.StatsRequest{Namespace: "prod", Pod: "web-1"}, action{verb: "stats", kind: "Pod", namespace: "prod", name: "web-1"}},
	} {
		acts, ok = actionsOf(pb.Pods_Stats_FullMethodName, tc.req)
		if !ok || len(acts) != 1 || acts[0] != tc.want {
			t.Errorf("stats %v: %+v %v, want %+v", tc.req, acts, ok, tc.want)
		}
	}
	if _, ok := actionsOf("/skiff.v1.Cluster/Unknown", &pb.StatusRequest{}); ok {
		t.Fatal("an unknown method was described")
	}
}

func TestRedactSecrets(t *testing.T) {
	secret := pb.Wrap(&pb.Secret{Metadata: &pb.ObjectMeta{Namespace: "default", Name: "s"}, Data: map[string][]byte{"k": []byte("v")}})
	cm := configMap("c", map[string]string{"a": "b"})
	got := redactSecrets(&pb.ListResponse{Items: []*pb.Object{secret, cm}, ResourceVersion: 7}).(*pb.ListResponse)
	if got.GetItems()[0].GetSecret().GetData() != nil || got.GetItems()[0].GetSecret().GetMetadata().GetName() != "s" ||
		got.GetItems()[1].GetConfigMap().GetData()["a"] != "b" || got.GetResourceVersion() != 7 {
		t.Fatalf("redacted list: %v", got)
	}
	if string(secret.GetSecret().GetData()["k"]) != "v" {
		t.Fatal("redaction changed the original object")
	}
	ev := redactSecrets(&pb.WatchEvent{Type: "ADDED", Object: secret}).(*pb.WatchEvent)
	if ev.GetObject().GetSecret().GetData() != nil {
		t.Fatalf("redacted event: %v", ev)
	}
}
