package server

// Authorization by roles (see docs/architecture.md, Security). Every call
// is authenticated first (tls.go: a client certificate, or a bearer token
// from tokens.go) into a principal; authorize then decides, in one place,
// whether that principal may do what the call asks:
//
//   - admin and master: everything. Calls another master forwards carry the
//     master's identity: they were authorized where the client connected.
//   - viewer: get, list and watch of every kind except Secrets (as
//     Kubernetes' view role), cluster status, pod logs and usage (stats,
//     skiff top: metrics.k8s.io, which the view role may read).
//   - controller: what viewer may, plus Secrets without their data
//     (redactSecrets), plus create, update, updateStatus, apply, delete and
//     bind of the workload kinds; no operator calls, no exec.
//   - node: Kubernetes' Node authorizer plus NodeRestriction: read pods,
//     services, endpoints and nodes; get a ConfigMap or Secret only when a
//     pod bound to the node references it; write only its own Node, the
//     status of pods bound to it, deletions of those pods, Events (create
//     and update: a repeat updates its count), and its own Lease in
//     kube-node-lease (its heartbeat).
//
// The decision reads the store (for a node's pods) but never writes; a
// denial is PermissionDenied naming the principal, the verb, the object and
// what is missing.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/fsm"
	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

// Roles a principal can have.
const (
	RoleAdmin      = "admin"
	RoleMaster     = "master"
	RoleViewer     = "viewer"
	RoleController = "controller"
	RoleNode       = "node"
)

// tokenRoles are the roles a bearer token may carry (nodes and masters
// authenticate with certificates).
var tokenRoles = []string{RoleViewer, RoleController, RoleAdmin}

// principal is an authenticated caller.
type principal struct {
	role string
	// name is the node's name (role node), the token's ID (bearer
	// tokens) or the certificate's common name.
	name string
	// token is true for bearer-token principals.
	token bool
}

// caller is the principal's name in the audit log and for limits.
func (p principal) caller() string {
	if p.token {
		return "token:" + p.name
	}
	if p.role == RoleNode {
		return "cn=" + pki.NodeCNPrefix + p.name
	}
	return "cn=" + p.name
}

func (p principal) String() string {
	switch {
	case p.token:
		return fmt.Sprintf("%s token %q", p.role, p.name)
	case p.role == RoleNode:
		return fmt.Sprintf("node %q", p.name)
	case p.role == "":
		return fmt.Sprintf("certificate %q", p.name)
	}
	return fmt.Sprintf("%s %q", p.role, p.name)
}

// principalOf maps a verified certificate to a principal: its O is the
// role.
func principalOf(id pki.Identity) principal {
	switch {
	case contains(id.Orgs, pki.OrgMaster):
		return principal{role: RoleMaster, name: id.CommonName}
	case contains(id.Orgs, pki.OrgAdmin):
		return principal{role: RoleAdmin, name: id.CommonName}
	case contains(id.Orgs, pki.OrgNode) && strings.HasPrefix(id.CommonName, pki.NodeCNPrefix):
		return principal{role: RoleNode, name: strings.TrimPrefix(id.CommonName, pki.NodeCNPrefix)}
	}
	return principal{name: id.CommonName} // no role: denied everything
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principalFrom(ctx context.Context) (principal, bool) {
	p, ok := ctx.Value(principalKey{}).(principal)
	return p, ok
}

// action is what one call asks to do. A Bind asks one action per pod.
type action struct {
	verb          string // get list watch create update updateStatus apply delete bind status logs exec stats portforward snapshot-save snapshot-restore transfer-leadership remove-peer read-index
	kind          string // canonical kind; empty for calls about no object
	namespace     string
	name          string
	fieldSelector string
}

// methodVerbs are the verbs of calls that name no object in their request
// (or whose request is streamed after the call opens, as Exec's).
var methodVerbs = map[string]string{
	pb.Operator_Status_FullMethodName:             "status",
	pb.Operator_TransferLeadership_FullMethodName: "transfer-leadership",
	pb.Operator_RemovePeer_FullMethodName:         "remove-peer",
	pb.Operator_SnapshotSave_FullMethodName:       "snapshot-save",
	pb.Operator_SnapshotRestore_FullMethodName:    "snapshot-restore",
	pb.Operator_ReadIndex_FullMethodName:          "read-index",
	pb.Pods_Exec_FullMethodName:                   "exec",
	pb.Pods_PortForward_FullMethodName:            "portforward",
}

// actionsOf describes a request. ok is false for a request this file does
// not know, which only admins and masters may make.
func actionsOf(method string, req any) (acts []action, ok bool) {
	if v, ok := methodVerbs[method]; ok {
		return []action{{verb: v}}, true
	}
	write := func(verb string, r *pb.WriteRequest) []action {
		m := metaOf(r.GetObject())
		return []action{{verb: verb, kind: r.GetObject().KindName(), namespace: m.GetNamespace(), name: m.GetName()}}
	}
	switch r := req.(type) {
	case *pb.WriteRequest:
		switch method {
		case pb.Cluster_Create_FullMethodName:
			return write("create", r), true
		case pb.Cluster_Update_FullMethodName:
			return write("update", r), true
		case pb.Cluster_UpdateStatus_FullMethodName:
			return write("updateStatus", r), true
		case pb.Cluster_Apply_FullMethodName:
			return write("apply", r), true
		}
	case *pb.DeleteRequest:
		d := r.GetDelete()
		return []action{{verb: "delete", kind: d.GetKind(), namespace: d.GetNamespace(), name: d.GetName()}}, true
	case *pb.BindRequest:
		for _, b := range r.GetBinds() {
			acts = append(acts, action{verb: "bind", kind: "Pod", namespace: b.GetNamespace(), name: b.GetName()})
		}
		return acts, true
	case *pb.GetRequest:
		return []action{{verb: "get", kind: r.GetKind(), namespace: r.GetNamespace(), name: r.GetName()}}, true
	case *pb.ListRequest:
		return []action{{verb: "list", kind: r.GetKind(), namespace: r.GetNamespace(), fieldSelector: r.GetFieldSelector()}}, true
	case *pb.WatchRequest:
		return []action{{verb: "watch", kind: r.GetKind(), namespace: r.GetNamespace(), fieldSelector: r.GetFieldSelector()}}, true
	case *pb.LogsRequest:
		return []action{{verb: "logs", kind: "Pod", namespace: r.GetNamespace(), name: r.GetPod()}}, true
	case *pb.StatsRequest:
		if r.GetPod() != "" || r.GetNamespace() != "" {
			return []action{{verb: "stats", kind: "Pod", namespace: r.GetNamespace(), name: r.GetPod()}}, true
		}
		return []action{{verb: "stats", kind: "Node", name: r.GetNodeName()}}, true
	}
	return nil, false
}

// objectReader is the part of the store authorize reads.
type objectReader interface {
	Get(kind, namespace, name string) (*pb.Object, error)
	List(q fsm.Query) ([]*pb.Object, uint64, error)
}

// workloadKinds are the kinds a controller may write.
var workloadKinds = map[string]bool{
	"Pod": true, "ReplicaSet": true, "Deployment": true, "DaemonSet": true, "Job": true,
	"Service": true, "Endpoints": true, "Event": true, "ConfigMap": true,
	"Lease": true, // leader election of the controllers' own replicas
}

// nodeReadableKinds are the kinds a node may get, list and watch freely.
var nodeReadableKinds = map[string]bool{"Pod": true, "Service": true, "Endpoints": true, "Node": true}

func isRead(verb string) bool { return verb == "get" || verb == "list" || verb == "watch" }

// authorize decides whether p may do a: nil, or a PermissionDenied status
// naming what is missing (NotFound when a node asks about a pod the store
// does not hold).
func authorize(p principal, a action, objs objectReader) error {
	if p.role == RoleAdmin || p.role == RoleMaster {
		return nil
	}
	if a.kind != "" {
		k, ok := pb.LookupKind(a.kind)
		if !ok {
			return nil // the handler answers InvalidArgument naming the kinds
		}
		a.kind = k.Kind
	}
	deny := func(format string, args ...any) error {
		return status.Errorf(codes.PermissionDenied, "%s may not %s %s: %s",
			p, a.verb, describeTarget(a), fmt.Sprintf(format, args...))
	}
	switch p.role {
	case RoleViewer, RoleController:
		switch {
		case isRead(a.verb) && a.kind == "Secret" && p.role == RoleViewer:
			return deny("role viewer may not read Secrets")
		case isRead(a.verb) || a.verb == "status" || a.verb == "logs" || a.verb == "stats":
			return nil
		case p.role == RoleViewer:
			return deny("role viewer is read-only (get, list, watch, cluster status, logs, top)")
		case a.kind != "" && workloadKinds[a.kind]:
			return nil
		case a.kind != "":
			return deny("role controller writes only workload kinds (%s)", strings.Join(slices.Sorted(maps.Keys(workloadKinds)), ", "))
		}
		return deny("role controller may not make operator calls, exec or port-forward")
	case RoleNode:
		return authorizeNode(p, a, objs, deny)
	}
	return deny("the certificate names no role (organization master, node or admin)")
}

// authorizeNode is Kubernetes' Node authorizer and NodeRestriction.
func authorizeNode(p principal, a action, objs objectReader, deny func(string, ...any) error) error {
	switch {
	case a.verb == "stats":
		return deny("a node may not read the usage of nodes and pods (skiff top is for viewers and above)")
	case isRead(a.verb) && nodeReadableKinds[a.kind]:
		return nil
	case a.kind == "Secret" || a.kind == "ConfigMap":
		if a.verb != "get" {
			return deny("a node may only get ConfigMaps and Secrets that its pods reference, one at a time")
		}
		ok, err := referencedByNodePod(objs, p.name, a.kind, a.namespace, a.name)
		if err != nil {
			return status.Errorf(codes.Internal, "authorize %s: %v", p, err)
		}
		if !ok {
			return deny("no pod bound to node %q references it", p.name)
		}
		return nil
	case a.kind == "Node":
		switch a.verb {
		case "create", "update", "updateStatus", "apply":
			if a.name == p.name {
				return nil
			}
			return deny("a node may only write its own Node object")
		}
		return deny("a node may read Nodes and write only its own")
	case a.kind == "Pod" && (a.verb == "updateStatus" || a.verb == "delete"):
		obj, err := objs.Get("Pod", a.namespace, a.name)
		if errors.Is(err, fsm.ErrNotFound) {
			return status.Errorf(codes.NotFound, "pods %q not found", a.namespace+"/"+a.name)
		}
		if err != nil {
			return status.Errorf(codes.Internal, "authorize %s: %v", p, err)
		}
		if bound := obj.GetPod().GetSpec().GetNodeName(); bound != p.name {
			if bound == "" {
				return deny("the pod is not bound to a node")
			}
			return deny("the pod is bound to node %q", bound)
		}
		return nil
	case a.kind == "Pod":
		return deny("a node may only update the status of pods bound to it and delete them")
	case a.kind == "Event" && (a.verb == "create" || a.verb == "update" || a.verb == "apply"):
		return nil
	case a.kind == "Lease":
		switch {
		case a.verb != "get" && a.verb != "create" && a.verb != "update":
			return deny("a node may only get, create and update its own Lease")
		case a.namespace != pb.NamespaceNodeLease || a.name != p.name:
			return deny("a node's Lease is %q in namespace %q", p.name, pb.NamespaceNodeLease)
		}
		return nil
	case a.kind != "":
		return deny("a node may not %s %s", a.verb, strings.ToLower(a.kind)+"s")
	}
	return deny("a node may not make operator calls, read logs or exec")
}

// referencedByNodePod reports whether a pod bound to node references the
// ConfigMap or Secret namespace/name by a volume, env valueFrom or envFrom.
func referencedByNodePod(objs objectReader, node, kind, namespace, name string) (bool, error) {
	pods, _, err := objs.List(fsm.Query{Kind: "Pod", Namespace: namespace, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return false, err
	}
	for _, o := range pods {
		if podReferences(o.GetPod().GetSpec(), kind, name) {
			return true, nil
		}
	}
	return false, nil
}

func podReferences(spec *pb.PodSpec, kind, name string) bool {
	secret := kind == "Secret"
	for _, v := range spec.GetVolumes() {
		if secret && v.GetSecret() != nil && v.GetSecret().GetSecretName() == name ||
			!secret && v.GetConfigMap() != nil && v.GetConfigMap().GetName() == name {
			return true
		}
	}
	for _, cs := range [][]*pb.Container{spec.GetContainers(), spec.GetInitContainers()} {
		for _, c := range cs {
			for _, e := range c.GetEnv() {
				vf := e.GetValueFrom()
				if secret && vf.GetSecretKeyRef() != nil && vf.GetSecretKeyRef().GetName() == name ||
					!secret && vf.GetConfigMapKeyRef() != nil && vf.GetConfigMapKeyRef().GetName() == name {
					return true
				}
			}
			for _, e := range c.GetEnvFrom() {
				if secret && e.GetSecretRef() != nil && e.GetSecretRef().GetName() == name ||
					!secret && e.GetConfigMapRef() != nil && e.GetConfigMapRef().GetName() == name {
					return true
				}
			}
		}
	}
	return false
}

// describeTarget names an action's object the way kubectl does:
// `pods "default/web-1"`, `secrets in namespace "default"`, `nodes`.
func describeTarget(a action) string {
	if a.kind == "" {
		return "(cluster)"
	}
	plural := strings.ToLower(a.kind) + "s"
	if k, ok := pb.LookupKind(a.kind); ok {
		plural = k.Plural
	}
	switch {
	case a.name != "" && a.namespace != "":
		return fmt.Sprintf("%s %q", plural, a.namespace+"/"+a.name)
	case a.name != "":
		return fmt.Sprintf("%s %q", plural, a.name)
	case a.namespace != "":
		return fmt.Sprintf("%s in namespace %q", plural, a.namespace)
	}
	return plural
}

// authorizeCall authorizes every action of a request. A node's denial is
// checked again after catching up with the leader: a pod bound a moment
// ago may not have reached this master yet.
func (s *Server) authorizeCall(ctx context.Context, method string, req any) error {
	if s.tls == nil {
		return nil // --insecure: no authentication, so nothing to authorize
	}
	p, ok := principalFrom(ctx)
	if !ok {
		return nil // IssueNodeCertificate authenticates itself
	}
	if p.role == RoleAdmin || p.role == RoleMaster {
		return nil
	}
	acts, known := actionsOf(method, req)
	if !known {
		return status.Errorf(codes.PermissionDenied, "%s may not call %s: only admins may", p, method)
	}
	check := func() error {
		for _, a := range acts {
			if err := authorize(p, a, s.fsm); err != nil {
				return err
			}
		}
		return nil
	}
	err := check()
	if err != nil && p.role == RoleNode {
		if lerr := s.linearize(ctx); lerr == nil {
			err = check()
		}
	}
	return err
}

// authzUnary authorizes unary calls.
func (s *Server) authzUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if info.FullMethod == pb.Cluster_IssueNodeCertificate_FullMethodName {
		return h(ctx, req)
	}
	if err := s.authorizeCall(ctx, info.FullMethod, req); err != nil {
		return nil, err
	}
	resp, err := h(ctx, req)
	if err == nil && redacted(ctx) {
		resp = redactSecrets(resp)
	}
	return resp, err
}

// redacted reports a caller that may see Secrets only without their data.
func redacted(ctx context.Context) bool {
	p, ok := principalFrom(ctx)
	return ok && p.role == RoleController
}

// redactSecrets returns resp with the data of every Secret in it removed,
// copying what it changes: responses may share objects with the store.
func redactSecrets(resp any) any {
	strip := func(o *pb.Object) *pb.Object {
		if o.GetSecret() == nil {
			return o
		}
		o = o.Clone()
		o.GetSecret().Data, o.GetSecret().StringData = nil, nil
		return o
	}
	switch r := resp.(type) {
	case *pb.GetResponse:
		return &pb.GetResponse{Object: strip(r.GetObject())}
	case *pb.ListResponse:
		out := &pb.ListResponse{ResourceVersion: r.GetResourceVersion(), Items: make([]*pb.Object, len(r.GetItems()))}
		for i, o := range r.GetItems() {
			out.Items[i] = strip(o)
		}
		return out
	case *pb.WatchEvent:
		return &pb.WatchEvent{Type: r.GetType(), Object: strip(r.GetObject()), ResourceVersion: r.GetResourceVersion()}
	case *pb.WriteResponse:
		return &pb.WriteResponse{Object: strip(r.GetObject()), Action: r.GetAction()}
	case *pb.EncodedListResponse, *pb.EncodedWatchEvent:
		return r // never Secrets: List and Watch send those decoded (reads.go)
	}
	return resp
}

// authzStream authorizes streams at open: by method for calls whose
// request names no object, else on the first message (List, Watch,
// Logs), before the handler sees it.
func (s *Server) authzStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if _, ok := methodVerbs[info.FullMethod]; ok {
		if err := s.authorizeCall(ss.Context(), info.FullMethod, nil); err != nil {
			return err
		}
		return h(srv, ss)
	}
	return h(srv, &authorizingStream{ServerStream: ss, s: s, method: info.FullMethod, redact: redacted(ss.Context())})
}

// authorizingStream authorizes the first message a handler receives.
type authorizingStream struct {
	grpc.ServerStream
	s       *Server
	method  string
	checked bool
	redact  bool
}

func (a *authorizingStream) SendMsg(m any) error {
	if a.redact {
		m = redactSecrets(m)
	}
	return a.ServerStream.SendMsg(m)
}

func (a *authorizingStream) RecvMsg(m any) error {
	if err := a.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if !a.checked {
		a.checked = true
		return a.s.authorizeCall(a.Context(), a.method, m)
	}
	return nil
}
