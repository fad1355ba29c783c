package deployment

import (
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
)

// Labels and annotations, as Kubernetes names them.
const (
	// PodTemplateHashLabel tells apart the pods (and ReplicaSets) of each
	// revision of a template.
	PodTemplateHashLabel = "pod-template-hash"
	// RevisionAnnotation numbers a Deployment's ReplicaSets by revision;
	// the Deployment carries its current one.
	RevisionAnnotation = "deployment.kubernetes.io/revision"
	// DesiredReplicasAnnotation and MaxReplicasAnnotation record, on a
	// ReplicaSet, the Deployment's replicas and replicas+surge when it was
	// last scaled.
	DesiredReplicasAnnotation = "deployment.kubernetes.io/desired-replicas"
	MaxReplicasAnnotation     = "deployment.kubernetes.io/max-replicas"
)

// Kubernetes' defaults.
const (
	defaultMaxSurge             = "25%"
	defaultMaxUnavailable       = "25%"
	defaultRevisionHistoryLimit = pb.DefaultRevisionHistoryLimit
	defaultProgressDeadline     = pb.DefaultProgressDeadlineSeconds
)

func replicasOf(d *pb.Deployment) int32 {
	if r := d.GetSpec().Replicas; r != nil {
		return *r
	}
	return 1
}

func rsReplicas(rs *pb.ReplicaSet) int32 {
	if r := rs.GetSpec().Replicas; r != nil {
		return *r
	}
	return 1
}

func strategyType(d *pb.Deployment) string {
	if t := d.GetSpec().GetStrategy().GetType(); t != "" {
		return t
	}
	return "RollingUpdate"
}

func revisionHistoryLimit(d *pb.Deployment) int32 {
	if l := d.GetSpec().RevisionHistoryLimit; l != nil {
		return *l
	}
	return defaultRevisionHistoryLimit
}

func progressDeadline(d *pb.Deployment) int32 {
	if p := d.GetSpec().ProgressDeadlineSeconds; p != nil {
		return *p
	}
	return defaultProgressDeadline
}

// scaledValue resolves an int-or-percent against total, rounding a percent
// up or down as asked (Kubernetes' GetScaledValueFromIntOrPercent).
func scaledValue(v string, total int32, roundUp bool) (int32, error) {
	if p, ok := strings.CutSuffix(v, "%"); ok {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid percentage %q", v)
		}
		f := float64(n) * float64(total) / 100
		if roundUp {
			return int32(math.Ceil(f)), nil
		}
		return int32(math.Floor(f)), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid value %q: not a non-negative integer or percentage", v)
	}
	return int32(n), nil
}

// fenceposts returns maxSurge and maxUnavailable as pod counts for the
// Deployment's replicas: surge rounds up, unavailable rounds down, and if
// both come to 0 unavailable is 1 so that a rollout can proceed.
func fenceposts(d *pb.Deployment) (surge, unavailable int32, err error) {
	ru := d.GetSpec().GetStrategy().GetRollingUpdate()
	ms, mu := ru.GetMaxSurge(), ru.GetMaxUnavailable()
	if ms == "" {
		ms = defaultMaxSurge
	}
	if mu == "" {
		mu = defaultMaxUnavailable
	}
	desired := replicasOf(d)
	if surge, err = scaledValue(ms, desired, true); err != nil {
		return 0, 0, fmt.Errorf("spec.strategy.rollingUpdate.maxSurge: %w", err)
	}
	if unavailable, err = scaledValue(mu, desired, false); err != nil {
		return 0, 0, fmt.Errorf("spec.strategy.rollingUpdate.maxUnavailable: %w", err)
	}
	if surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return surge, unavailable, nil
}

// maxUnavailable is the unavailability a rolling update allows now (none for
// Recreate or zero replicas).
func maxUnavailable(d *pb.Deployment) int32 {
	if strategyType(d) != "RollingUpdate" || replicasOf(d) == 0 {
		return 0
	}
	_, u, err := fenceposts(d)
	if err != nil {
		return 0
	}
	return min(u, replicasOf(d))
}

// templateHash hashes a pod template (and the collision count, when set)
// into a short string of Kubernetes' safe alphabet.
func templateHash(t *pb.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(t)
	h.Write(b)
	if collisionCount != nil {
		fmt.Fprintf(h, "%d", *collisionCount)
	}
	return safeEncode(strconv.FormatUint(uint64(h.Sum32()), 10))
}

const alphanums = "bcdfghjklmnpqrstvwxz2456789"

// safeEncode is Kubernetes' rand.SafeEncodeString.
func safeEncode(s string) string {
	r := make([]byte, len(s))
	for i, b := range []byte(s) {
		r[i] = alphanums[int(b)%len(alphanums)]
	}
	return string(r)
}

// equalIgnoreHash compares two templates leaving out pod-template-hash
// (and an empty metadata against none).
func equalIgnoreHash(a, b *pb.PodTemplateSpec) bool {
	return proto.Equal(stripHash(a), stripHash(b))
}

func stripHash(t *pb.PodTemplateSpec) *pb.PodTemplateSpec {
	if t == nil {
		return &pb.PodTemplateSpec{}
	}
	c := proto.Clone(t).(*pb.PodTemplateSpec)
	if c.Metadata != nil {
		delete(c.Metadata.Labels, PodTemplateHashLabel)
		if len(c.Metadata.Labels) == 0 {
			c.Metadata.Labels = nil
		}
		if proto.Size(c.Metadata) == 0 {
			c.Metadata = nil
		}
	}
	return c
}

func revision(rs *pb.ReplicaSet) int64 {
	v, err := strconv.ParseInt(rs.GetMetadata().GetAnnotations()[RevisionAnnotation], 10, 64)
	if err != nil {
		return 0
	}
	return v
}

func maxRevision(rss []*pb.ReplicaSet) int64 {
	var m int64
	for _, rs := range rss {
		m = max(m, revision(rs))
	}
	return m
}

// sortByCreation orders ReplicaSets oldest first (ties by name).
func sortByCreation(rss []*pb.ReplicaSet) {
	sort.SliceStable(rss, func(i, j int) bool {
		a, b := rss[i].GetMetadata().GetCreationTimestamp().AsTime(), rss[j].GetMetadata().GetCreationTimestamp().AsTime()
		if !a.Equal(b) {
			return a.Before(b)
		}
		return rss[i].GetMetadata().GetName() < rss[j].GetMetadata().GetName()
	})
}

func sumSpec(rss []*pb.ReplicaSet) int32 {
	var n int32
	for _, rs := range rss {
		if rs != nil {
			n += rsReplicas(rs)
		}
	}
	return n
}

func sumStatus(rss []*pb.ReplicaSet, f func(*pb.ReplicaSetStatus) int32) int32 {
	var n int32
	for _, rs := range rss {
		if rs != nil {
			n += f(rs.GetStatus())
		}
	}
	return n
}
