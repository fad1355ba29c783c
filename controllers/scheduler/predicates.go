package scheduler

import pb "github.com/skiff-sh/skiff/proto"

// Exported forms of the placement filters, for controllers that place pods
// themselves (the DaemonSet controller binds its pods directly) or act on
// taints (node lifecycle evicts pods that do not tolerate NoExecute taints).
// They are the same functions Schedule uses, so every component agrees on
// what "tolerates" and "matches" mean.

// Tolerates reports whether any of tolerations tolerates taint (Kubernetes'
// ToleratesTaint: an empty key with Exists tolerates every taint, an empty
// effect every effect).
func Tolerates(tolerations []*pb.Toleration, taint *pb.Taint) bool {
	f := podFilter{tolerations: tolerations}
	return f.tolerates(taint)
}

// MatchingTolerations returns the tolerations that tolerate taint.
func MatchingTolerations(tolerations []*pb.Toleration, taint *pb.Taint) []*pb.Toleration {
	var out []*pb.Toleration
	for _, t := range tolerations {
		if Tolerates([]*pb.Toleration{t}, taint) {
			out = append(out, t)
		}
	}
	return out
}

// MatchesNode reports whether node satisfies pod's nodeSelector and required
// node affinity (not taints, readiness or resources).
func MatchesNode(pod *pb.Pod, node *pb.Node) bool {
	f := newPodFilter(pod)
	return f.matchesNode(newNodeInfo(node))
}
