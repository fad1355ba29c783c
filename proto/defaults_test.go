package proto

import (
	"testing"

	gproto "google.golang.org/protobuf/proto"
)

func TestSetDefaultsDeployment(t *testing.T) {
	o := mustDecode(t, `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers: [{name: init, image: "busybox@sha256:0123"}]
      containers:
      - name: web
        image: nginx
        ports: [{containerPort: 80}]
        env: [{name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]
        livenessProbe: {httpGet: {port: 80}}
        readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 3}
      volumes:
      - {name: c, configMap: {name: c}}
      - {name: s, secret: {secretName: s, defaultMode: 0400}}
`)
	o.GetDeployment().ApiVersion, o.GetDeployment().Kind = "", ""
	SetDefaults(o)
	d := o.GetDeployment()
	s := d.GetSpec()
	ps := s.GetTemplate().GetSpec()
	c := ps.GetContainers()[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"apiVersion", d.GetApiVersion(), "apps/v1"},
		{"kind", d.GetKind(), "Deployment"},
		{"replicas", s.GetReplicas(), int32(1)},
		{"strategy.type", s.GetStrategy().GetType(), "RollingUpdate"},
		{"maxUnavailable", s.GetStrategy().GetRollingUpdate().GetMaxUnavailable(), "25%"},
		{"maxSurge", s.GetStrategy().GetRollingUpdate().GetMaxSurge(), "25%"},
		{"revisionHistoryLimit", s.GetRevisionHistoryLimit(), int32(10)},
		{"progressDeadlineSeconds", s.GetProgressDeadlineSeconds(), int32(600)},
		{"restartPolicy", ps.GetRestartPolicy(), "Always"},
		{"dnsPolicy", ps.GetDnsPolicy(), "ClusterFirst"},
		{"schedulerName", ps.GetSchedulerName(), "default-scheduler"},
		{"terminationGracePeriodSeconds", ps.GetTerminationGracePeriodSeconds(), int64(30)},
		{"imagePullPolicy (no tag)", c.GetImagePullPolicy(), "Always"},
		{"imagePullPolicy (digest)", ps.GetInitContainers()[0].GetImagePullPolicy(), "IfNotPresent"},
		{"terminationMessagePath", c.GetTerminationMessagePath(), "/dev/termination-log"},
		{"port protocol", c.GetPorts()[0].GetProtocol(), "TCP"},
		{"fieldRef apiVersion", c.GetEnv()[0].GetValueFrom().GetFieldRef().GetApiVersion(), "v1"},
		{"probe timeoutSeconds", c.GetLivenessProbe().GetTimeoutSeconds(), int32(1)},
		{"probe periodSeconds", c.GetLivenessProbe().GetPeriodSeconds(), int32(10)},
		{"probe periodSeconds kept", c.GetReadinessProbe().GetPeriodSeconds(), int32(3)},
		{"probe successThreshold", c.GetLivenessProbe().GetSuccessThreshold(), int32(1)},
		{"probe failureThreshold", c.GetLivenessProbe().GetFailureThreshold(), int32(3)},
		{"httpGet path", c.GetLivenessProbe().GetHttpGet().GetPath(), "/"},
		{"httpGet scheme", c.GetLivenessProbe().GetHttpGet().GetScheme(), "HTTP"},
		{"configMap defaultMode", ps.GetVolumes()[0].GetConfigMap().GetDefaultMode(), int32(0o644)},
		{"secret defaultMode kept", ps.GetVolumes()[1].GetSecret().GetDefaultMode(), int32(0o400)},
		{"no selector invented", len(d.GetMetadata().GetLabels()), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestSetDefaultsOtherKinds(t *testing.T) {
	svc := mustDecode(t, "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: NodePort, ports: [{port: 80}, {port: 81, targetPort: web}]}\n")
	SetDefaults(svc)
	ss := svc.GetService().GetSpec()
	if ss.GetPorts()[0].GetTargetPort() != "80" || ss.GetPorts()[1].GetTargetPort() != "web" || ss.GetPorts()[0].GetProtocol() != "TCP" ||
		ss.GetSessionAffinity() != "None" || ss.GetExternalTrafficPolicy() != "Cluster" {
		t.Errorf("Service: %v", ss)
	}
	svc = Wrap(&Service{Metadata: &ObjectMeta{Name: "s"}})
	SetDefaults(svc)
	if svc.GetService().GetSpec().GetType() != "ClusterIP" || svc.GetService().GetSpec().GetExternalTrafficPolicy() != "" {
		t.Errorf("Service: %v", svc)
	}

	sec := Wrap(&Secret{Metadata: &ObjectMeta{Name: "s"}})
	SetDefaults(sec)
	if sec.GetSecret().GetType() != "Opaque" || sec.GetSecret().GetApiVersion() != "v1" || sec.GetSecret().GetKind() != "Secret" {
		t.Errorf("Secret: %v", sec)
	}

	ns := Wrap(&Namespace{Metadata: &ObjectMeta{Name: "n"}})
	SetDefaults(ns)
	if ns.GetNamespace().GetStatus().GetPhase() != "Active" {
		t.Errorf("Namespace: %v", ns)
	}

	rs := Wrap(&ReplicaSet{Metadata: &ObjectMeta{Name: "r"}, Spec: &ReplicaSetSpec{Replicas: gproto.Int32(0)}})
	SetDefaults(rs)
	if rs.GetReplicaSet().GetSpec().Replicas == nil || rs.GetReplicaSet().GetSpec().GetReplicas() != 0 {
		t.Errorf("ReplicaSet replicas 0 must stay 0: %v", rs)
	}
	rs = Wrap(&ReplicaSet{Metadata: &ObjectMeta{Name: "r"}})
	SetDefaults(rs)
	if rs.GetReplicaSet().GetSpec().GetReplicas() != 1 {
		t.Errorf("ReplicaSet: %v", rs)
	}

	ds := Wrap(&DaemonSet{Metadata: &ObjectMeta{Name: "d"}})
	SetDefaults(ds)
	us := ds.GetDaemonSet().GetSpec().GetUpdateStrategy()
	if us.GetType() != "RollingUpdate" || us.GetRollingUpdate().GetMaxUnavailable() != "1" || us.GetRollingUpdate().GetMaxSurge() != "0" ||
		ds.GetDaemonSet().GetSpec().GetRevisionHistoryLimit() != 10 {
		t.Errorf("DaemonSet: %v", ds)
	}
	ds = Wrap(&DaemonSet{Metadata: &ObjectMeta{Name: "d"}, Spec: &DaemonSetSpec{UpdateStrategy: &DaemonSetUpdateStrategy{Type: "OnDelete"}}})
	SetDefaults(ds)
	if ds.GetDaemonSet().GetSpec().GetUpdateStrategy().GetRollingUpdate() != nil {
		t.Errorf("OnDelete DaemonSet got a rollingUpdate: %v", ds)
	}
	dep := Wrap(&Deployment{Metadata: &ObjectMeta{Name: "d"}, Spec: &DeploymentSpec{Strategy: &DeploymentStrategy{Type: "Recreate"}}})
	SetDefaults(dep)
	if dep.GetDeployment().GetSpec().GetStrategy().GetRollingUpdate() != nil {
		t.Errorf("Recreate Deployment got a rollingUpdate: %v", dep)
	}

	ep := Wrap(&Endpoints{Metadata: &ObjectMeta{Name: "e"}, Subsets: []*EndpointSubset{{Ports: []*EndpointPort{{Port: 80}}}}})
	SetDefaults(ep)
	if ep.GetEndpoints().GetSubsets()[0].GetPorts()[0].GetProtocol() != "TCP" {
		t.Errorf("Endpoints: %v", ep)
	}
}

func TestSetDefaultsJob(t *testing.T) {
	o := mustDecode(t, validJob)
	o.GetJob().Spec.Template.Metadata = &ObjectMeta{Labels: map[string]string{"app": "pi"}}
	SetDefaults(o)
	j := o.GetJob()
	s := j.GetSpec()
	if s.GetParallelism() != 1 || s.GetCompletions() != 1 || s.GetBackoffLimit() != 6 {
		t.Errorf("counts: %v", s)
	}
	if got := s.GetSelector().GetMatchLabels(); len(got) != 1 || got[JobControllerUIDLabel] != "3b2c" {
		t.Errorf("selector = %v", got)
	}
	tl := s.GetTemplate().GetMetadata().GetLabels()
	for k, v := range map[string]string{"app": "pi", JobControllerUIDLabel: "3b2c", "controller-uid": "3b2c", JobNameLabel: "pi", "job-name": "pi"} {
		if tl[k] != v {
			t.Errorf("template label %s = %q, want %q", k, tl[k], v)
		}
	}
	if got := j.GetMetadata().GetLabels(); len(got) != 1 || got["app"] != "pi" {
		t.Errorf("job labels = %v, want the template's own", got)
	}
	// The template's restartPolicy was Never and stays so: Validate passes.
	if err := Validate(o); err != nil {
		t.Error(err)
	}
	again := o.Clone()
	SetDefaults(again)
	if !gproto.Equal(o, again) {
		t.Errorf("second SetDefaults changed the Job:\n%v\n%v", o, again)
	}

	// Without a uid no selector can be generated yet.
	o = mustDecode(t, validJob)
	o.GetJob().Metadata.Uid = ""
	SetDefaults(o)
	if o.GetJob().GetSpec().GetSelector() != nil {
		t.Errorf("selector generated without uid: %v", o.GetJob().GetSpec().GetSelector())
	}

	// A work-queue Job (parallelism only) keeps completions unset.
	o = Wrap(&Job{Metadata: &ObjectMeta{Name: "q"}, Spec: &JobSpec{Parallelism: gproto.Int32(4)}})
	SetDefaults(o)
	if o.GetJob().GetSpec().Completions != nil {
		t.Errorf("completions = %d, want unset", o.GetJob().GetSpec().GetCompletions())
	}
}

func TestSetDefaultsIdempotent(t *testing.T) {
	var objs []*Object
	for _, os := range testdataObjects(t) {
		objs = append(objs, os...)
	}
	for _, s := range []string{validDeployment, validService, validJob, validDaemonSet} {
		objs = append(objs, mustDecode(t, s))
	}
	for _, k := range Kinds() {
		objs = append(objs, Wrap(k.New()))
	}
	objs = append(objs, &Object{})
	for _, o := range objs {
		once := o.Clone()
		SetDefaults(once)
		twice := once.Clone()
		SetDefaults(twice)
		if !gproto.Equal(once, twice) {
			t.Errorf("%s %s: second SetDefaults changed the object:\n%v\n%v", o.KindName(), o.Meta().GetName(), once, twice)
		}
	}
	SetDefaults(nil) // must not panic
}

func TestDefaultPullPolicy(t *testing.T) {
	for image, want := range map[string]string{
		"nginx":                            "Always",
		"nginx:latest":                     "Always",
		"nginx:1.27":                       "IfNotPresent",
		"localhost:5000/nginx":             "Always",
		"localhost:5000/nginx:1.0":         "IfNotPresent",
		"localhost:5000/nginx:latest":      "Always",
		"nginx@sha256:abcd":                "IfNotPresent",
		"nginx:latest@sha256:abcd":         "Always",
		"registry.example.com/team/app:v2": "IfNotPresent",
		"":                                 "IfNotPresent",
	} {
		if got := DefaultPullPolicy(image); got != want {
			t.Errorf("DefaultPullPolicy(%q) = %s, want %s", image, got, want)
		}
	}
}
