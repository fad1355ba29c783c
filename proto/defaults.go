package proto

import (
	"maps"
	"strconv"
	"strings"

	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Default values Kubernetes applies, by name so that controllers and tests
// can refer to them.
const (
	DefaultTerminationGracePeriodSeconds = 30
	DefaultSchedulerName                 = "default-scheduler"
	DefaultTerminationMessagePath        = "/dev/termination-log"
	DefaultRevisionHistoryLimit          = 10
	DefaultProgressDeadlineSeconds       = 600
	DefaultJobBackoffLimit               = 6
	// DefaultFileMode is 0644, the mode of files projected from ConfigMaps
	// and Secrets.
	DefaultFileMode = 0o644
)

// System namespaces: the masters create them and refuse to delete them.
// NamespaceNodeLease holds each node's Lease, its heartbeat.
const (
	NamespaceDefault   = "default"
	NamespaceNodeLease = "kube-node-lease"
)

// SystemNamespaces lists the namespaces the masters keep.
var SystemNamespaces = []string{NamespaceDefault, NamespaceNodeLease}

// Labels Kubernetes puts on a Job's pods and selects them by when it
// generates the Job's selector.
const (
	JobControllerUIDLabel       = "batch.kubernetes.io/controller-uid"
	JobNameLabel                = "batch.kubernetes.io/job-name"
	legacyJobControllerUIDLabel = "controller-uid"
	legacyJobNameLabel          = "job-name"
)

// SetDefaults fills in place the defaults Kubernetes' API server applies to
// a stored object; calling it again changes nothing. Beyond apiVersion and
// kind these are Kubernetes' own (v1.32) defaults for the fields skiff has.
// Workloads get no selector or labels, as apps/v1 requires them, except
// that a Job without manualSelector gets Kubernetes' generated selector
// (by controller uid) once metadata.uid is set: call SetDefaults after
// assigning the uid.
func SetDefaults(o *Object) {
	r := o.Resource()
	if r == nil {
		return
	}
	ki, ok := kindByName(KindOf(r))
	if !ok {
		return
	}
	rf := r.ProtoReflect()
	fields := rf.Descriptor().Fields()
	setIfEmpty(rf, fields.ByName("api_version"), ki.APIVersion)
	setIfEmpty(rf, fields.ByName("kind"), ki.Kind)

	switch v := r.(type) {
	case *Namespace:
		if v.Status == nil {
			v.Status = &NamespaceStatus{}
		}
		defaultString(&v.Status.Phase, "Active")
	case *Pod:
		if v.Spec == nil {
			v.Spec = &PodSpec{}
		}
		defaultPodSpec(v.Spec)
	case *Service:
		if v.Spec == nil {
			v.Spec = &ServiceSpec{}
		}
		defaultServiceSpec(v.Spec)
	case *Endpoints:
		for _, ss := range v.GetSubsets() {
			for _, p := range ss.GetPorts() {
				if p != nil {
					defaultString(&p.Protocol, "TCP")
				}
			}
		}
	case *Secret:
		defaultString(&v.Type, "Opaque")
	case *ReplicaSet:
		if v.Spec == nil {
			v.Spec = &ReplicaSetSpec{}
		}
		defaultInt32(&v.Spec.Replicas, 1)
		defaultTemplate(v.Spec.Template)
	case *Deployment:
		if v.Spec == nil {
			v.Spec = &DeploymentSpec{}
		}
		defaultDeploymentSpec(v.Spec)
	case *DaemonSet:
		if v.Spec == nil {
			v.Spec = &DaemonSetSpec{}
		}
		s := v.Spec
		if s.UpdateStrategy == nil {
			s.UpdateStrategy = &DaemonSetUpdateStrategy{}
		}
		defaultString(&s.UpdateStrategy.Type, "RollingUpdate")
		if s.UpdateStrategy.Type == "RollingUpdate" {
			if s.UpdateStrategy.RollingUpdate == nil {
				s.UpdateStrategy.RollingUpdate = &RollingUpdateDaemonSet{}
			}
			defaultString(&s.UpdateStrategy.RollingUpdate.MaxUnavailable, "1")
			defaultString(&s.UpdateStrategy.RollingUpdate.MaxSurge, "0")
		}
		defaultInt32(&s.RevisionHistoryLimit, DefaultRevisionHistoryLimit)
		defaultTemplate(s.Template)
	case *Job:
		if v.Spec == nil {
			v.Spec = &JobSpec{}
		}
		defaultJob(v)
	}
}

func setIfEmpty(m protoreflect.Message, fd protoreflect.FieldDescriptor, v string) {
	if fd != nil && m.Get(fd).String() == "" {
		m.Set(fd, protoreflect.ValueOfString(v))
	}
}

func defaultString(p *string, v string) {
	if *p == "" {
		*p = v
	}
}

func defaultInt32(p **int32, v int32) {
	if *p == nil {
		*p = gproto.Int32(v)
	}
}

func defaultTemplate(t *PodTemplateSpec) {
	if t == nil {
		return
	}
	if t.Spec == nil {
		t.Spec = &PodSpec{}
	}
	defaultPodSpec(t.Spec)
}

func defaultPodSpec(s *PodSpec) {
	defaultString(&s.DnsPolicy, "ClusterFirst")
	defaultString(&s.RestartPolicy, "Always")
	defaultString(&s.SchedulerName, DefaultSchedulerName)
	if s.TerminationGracePeriodSeconds == nil {
		s.TerminationGracePeriodSeconds = gproto.Int64(DefaultTerminationGracePeriodSeconds)
	}
	for _, c := range s.InitContainers {
		defaultContainer(c)
	}
	for _, c := range s.Containers {
		defaultContainer(c)
	}
	for _, v := range s.Volumes {
		if cm := v.GetConfigMap(); cm != nil && cm.DefaultMode == nil {
			cm.DefaultMode = gproto.Int32(DefaultFileMode)
		}
		if sec := v.GetSecret(); sec != nil && sec.DefaultMode == nil {
			sec.DefaultMode = gproto.Int32(DefaultFileMode)
		}
	}
}

func defaultContainer(c *Container) {
	if c == nil {
		return
	}
	defaultString(&c.ImagePullPolicy, DefaultPullPolicy(c.Image))
	defaultString(&c.TerminationMessagePath, DefaultTerminationMessagePath)
	for _, p := range c.Ports {
		if p != nil {
			defaultString(&p.Protocol, "TCP")
		}
	}
	for _, e := range c.Env {
		if fr := e.GetValueFrom().GetFieldRef(); fr != nil {
			defaultString(&fr.ApiVersion, "v1")
		}
	}
	for _, p := range []*Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p == nil {
			continue
		}
		defaultZero(&p.TimeoutSeconds, 1)
		defaultZero(&p.PeriodSeconds, 10)
		defaultZero(&p.SuccessThreshold, 1)
		defaultZero(&p.FailureThreshold, 3)
		if h := p.HttpGet; h != nil {
			defaultString(&h.Path, "/")
			defaultString(&h.Scheme, "HTTP")
		}
	}
}

func defaultZero(p *int32, v int32) {
	if *p == 0 {
		*p = v
	}
}

// DefaultPullPolicy returns the imagePullPolicy Kubernetes gives an image:
// Always for the tag "latest" or no tag (which means latest), IfNotPresent
// for any other tag or a digest.
func DefaultPullPolicy(image string) string {
	if image == "" {
		return "IfNotPresent"
	}
	name, _, hasDigest := strings.Cut(image, "@")
	tag := ""
	if i := strings.LastIndexByte(name, ':'); i >= 0 && !strings.Contains(name[i+1:], "/") {
		tag = name[i+1:]
	}
	if tag == "latest" || (tag == "" && !hasDigest) {
		return "Always"
	}
	return "IfNotPresent"
}

func defaultServiceSpec(s *ServiceSpec) {
	defaultString(&s.Type, "ClusterIP")
	defaultString(&s.SessionAffinity, "None")
	if s.Type == "NodePort" {
		defaultString(&s.ExternalTrafficPolicy, "Cluster")
	}
	for _, p := range s.Ports {
		if p == nil {
			continue
		}
		defaultString(&p.Protocol, "TCP")
		if p.TargetPort == "" && p.Port != 0 {
			p.TargetPort = strconv.Itoa(int(p.Port))
		}
	}
}

func defaultDeploymentSpec(s *DeploymentSpec) {
	defaultInt32(&s.Replicas, 1)
	if s.Strategy == nil {
		s.Strategy = &DeploymentStrategy{}
	}
	defaultString(&s.Strategy.Type, "RollingUpdate")
	if s.Strategy.Type == "RollingUpdate" {
		if s.Strategy.RollingUpdate == nil {
			s.Strategy.RollingUpdate = &RollingUpdateDeployment{}
		}
		defaultString(&s.Strategy.RollingUpdate.MaxUnavailable, "25%")
		defaultString(&s.Strategy.RollingUpdate.MaxSurge, "25%")
	}
	defaultInt32(&s.RevisionHistoryLimit, DefaultRevisionHistoryLimit)
	defaultInt32(&s.ProgressDeadlineSeconds, DefaultProgressDeadlineSeconds)
	defaultTemplate(s.Template)
}

func defaultJob(j *Job) {
	s := j.Spec
	if s.Completions == nil && s.Parallelism == nil {
		s.Completions = gproto.Int32(1)
	}
	defaultInt32(&s.Parallelism, 1)
	defaultInt32(&s.BackoffLimit, DefaultJobBackoffLimit)
	defaultTemplate(s.Template)

	// A Job without labels takes its template's (batch/v1 defaulting),
	// leaving out the ones generated below so that a second call is a no-op.
	meta := MetaOf(j)
	if tl := s.GetTemplate().GetMetadata().GetLabels(); len(meta.Labels) == 0 && len(tl) > 0 {
		user := maps.Clone(tl)
		for _, k := range []string{JobControllerUIDLabel, JobNameLabel, legacyJobControllerUIDLabel, legacyJobNameLabel} {
			delete(user, k)
		}
		if len(user) > 0 {
			meta.Labels = user
		}
	}

	// The generated selector (Kubernetes' job strategy), which needs the uid.
	if s.GetManualSelector() || s.Selector != nil || meta.GetUid() == "" || s.Template == nil {
		return
	}
	tm := s.Template.Metadata
	if tm == nil {
		tm = &ObjectMeta{}
		s.Template.Metadata = tm
	}
	if tm.Labels == nil {
		tm.Labels = map[string]string{}
	}
	for k, v := range map[string]string{
		JobControllerUIDLabel: meta.Uid, legacyJobControllerUIDLabel: meta.Uid,
		JobNameLabel: meta.Name, legacyJobNameLabel: meta.Name,
	} {
		if _, ok := tm.Labels[k]; !ok {
			tm.Labels[k] = v
		}
	}
	s.Selector = &LabelSelector{MatchLabels: map[string]string{JobControllerUIDLabel: meta.Uid}}
}
