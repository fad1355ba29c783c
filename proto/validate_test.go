package proto

import (
	"errors"
	"strings"
	"testing"

	gproto "google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestValidateTestdata(t *testing.T) {
	for file, objs := range testdataObjects(t) {
		for i, o := range objs {
			if err := Validate(o); err != nil {
				t.Errorf("%s[%d]: %v", file, i, err)
			}
			SetDefaults(o)
			if err := Validate(o); err != nil {
				t.Errorf("%s[%d] after SetDefaults: %v", file, i, err)
			}
		}
	}
}

func mustDecode(t *testing.T, s string) *Object {
	t.Helper()
	o, err := DecodeObject([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

const (
	validDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{name: http, containerPort: 80}]
        resources: {requests: {cpu: 100m}, limits: {cpu: 200m}}
        volumeMounts: [{name: data, mountPath: /data}]
        readinessProbe: {httpGet: {port: http}}
      volumes: [{name: data, emptyDir: {}}]
`
	validService = `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
`
	validJob = `apiVersion: batch/v1
kind: Job
metadata: {name: pi, uid: 3b2c}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: pi, image: perl, command: [perl, -e, 'print 1']}]
`
)

var validDaemonSet = strings.NewReplacer("kind: Deployment", "kind: DaemonSet", "  replicas: 2\n", "").Replace(validDeployment)

func TestValidateErrors(t *testing.T) {
	deploy := func(f func(d *Deployment)) func(t *testing.T) *Object {
		return func(t *testing.T) *Object {
			o := mustDecode(t, validDeployment)
			f(o.GetDeployment())
			return o
		}
	}
	pod := func(f func(s *PodSpec)) func(t *testing.T) *Object {
		return deploy(func(d *Deployment) { f(d.Spec.Template.Spec) })
	}
	container := func(f func(c *Container)) func(t *testing.T) *Object {
		return pod(func(s *PodSpec) { f(s.Containers[0]) })
	}
	service := func(f func(s *Service)) func(t *testing.T) *Object {
		return func(t *testing.T) *Object {
			o := mustDecode(t, validService)
			f(o.GetService())
			return o
		}
	}
	job := func(f func(j *Job)) func(t *testing.T) *Object {
		return func(t *testing.T) *Object {
			o := mustDecode(t, validJob)
			f(o.GetJob())
			return o
		}
	}
	tests := []struct {
		name string
		obj  func(t *testing.T) *Object
		want []string // "path: message" substrings
	}{
		{"name not a subdomain", deploy(func(d *Deployment) { d.Metadata.Name = "Web_1" }),
			[]string{`metadata.name: Invalid value: "Web_1": a lowercase RFC 1123 subdomain must consist of`}},
		{"name missing", deploy(func(d *Deployment) { d.Metadata.Name = "" }),
			[]string{"metadata.name: Required value: name or generateName is required"}},
		{"generateName", deploy(func(d *Deployment) { d.Metadata.Name = ""; d.Metadata.GenerateName = "Web-" }),
			[]string{`metadata.generateName: Invalid value: "Web-"`}},
		{"namespace name", deploy(func(d *Deployment) { d.Metadata.Namespace = "my.ns" }),
			[]string{`metadata.namespace: Invalid value: "my.ns": must not contain dots`}},
		{"namespace object name is a label", func(t *testing.T) *Object {
			return Wrap(&Namespace{Metadata: &ObjectMeta{Name: "a.b"}})
		}, []string{`metadata.name: Invalid value: "a.b": must not contain dots`}},
		{"namespace on a cluster-scoped kind", func(t *testing.T) *Object {
			return Wrap(&Node{Metadata: &ObjectMeta{Name: "n1", Namespace: "default"}})
		}, []string{"metadata.namespace: Forbidden: not allowed on this type"}},
		{"labels", deploy(func(d *Deployment) { d.Metadata.Labels = map[string]string{"bad key!": "v", "ok": "bad value!"} }),
			[]string{`metadata.labels: Invalid value: "bad key!": name part must consist of`, `metadata.labels: Invalid value: "bad value!": a valid label must be`}},
		{"annotations too large", deploy(func(d *Deployment) {
			d.Metadata.Annotations = map[string]string{"big": strings.Repeat("x", TotalAnnotationSizeLimit)}
		}), []string{"metadata.annotations: Too long: may not be more than 262144 bytes"}},
		{"owner reference", deploy(func(d *Deployment) {
			d.Metadata.OwnerReferences = []*OwnerReference{{ApiVersion: "v1", Kind: "X", Name: "x"}}
		}), []string{`metadata.ownerReferences[0].uid: Invalid value: "": uid must not be empty`}},
		{"apiVersion and kind fields", deploy(func(d *Deployment) { d.ApiVersion = "extensions/v1beta1"; d.Kind = "Pod" }),
			[]string{`apiVersion: Unsupported value: "extensions/v1beta1": supported values: "apps/v1"`, `kind: Unsupported value: "Pod"`}},

		{"no containers", pod(func(s *PodSpec) { s.Containers = nil }),
			[]string{"spec.template.spec.containers: Required value"}},
		{"duplicate container names", pod(func(s *PodSpec) {
			s.InitContainers = []*Container{{Name: "web", Image: "busybox"}}
		}), []string{`spec.template.spec.containers[0].name: Duplicate value: "web"`}},
		{"container name", container(func(c *Container) { c.Name = "Web" }),
			[]string{`spec.template.spec.containers[0].name: Invalid value: "Web": a lowercase RFC 1123 label`}},
		{"image missing", container(func(c *Container) { c.Image = "" }),
			[]string{"spec.template.spec.containers[0].image: Required value"}},
		{"ports", container(func(c *Container) {
			c.Ports = []*ContainerPort{{ContainerPort: 0}, {ContainerPort: 70000, HostPort: -1, Protocol: "SCTP", Name: "http"}, {Name: "http", ContainerPort: 8080}}
		}), []string{
			"spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
			"spec.template.spec.containers[0].ports[1].containerPort: Invalid value: 70000",
			"spec.template.spec.containers[0].ports[1].hostPort: Invalid value: -1",
			`spec.template.spec.containers[0].ports[1].protocol: Unsupported value: "SCTP": supported values: "TCP", "UDP"`,
			`spec.template.spec.containers[0].ports[2].name: Duplicate value: "http"`,
		}},
		{"seccomp type", pod(func(s *PodSpec) {
			s.SecurityContext = &PodSecurityContext{SeccompProfile: &SeccompProfile{Type: "Strict"}}
		}),
			[]string{`spec.securityContext.seccompProfile.type: Unsupported value: "Strict": supported values: "RuntimeDefault", "Unconfined", "Localhost"`}},
		{"seccomp localhost without profile", pod(func(s *PodSpec) {
			s.Containers[0].SecurityContext = &SecurityContext{SeccompProfile: &SeccompProfile{Type: "Localhost"}}
		}),
			[]string{"spec.containers[0].securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost"}},
		{"container runAsUser", pod(func(s *PodSpec) { s.Containers[0].SecurityContext = &SecurityContext{RunAsUser: new(int64(-1))} }),
			[]string{"spec.containers[0].securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive"}},
		{"restartPolicy", pod(func(s *PodSpec) { s.RestartPolicy = "Sometimes" }),
			[]string{`spec.template.spec.restartPolicy: Unsupported value: "Sometimes"`}},
		{"restartPolicy for a Deployment", pod(func(s *PodSpec) { s.RestartPolicy = "Never" }),
			[]string{`spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"`}},
		{"imagePullPolicy", container(func(c *Container) { c.ImagePullPolicy = "always" }),
			[]string{`spec.template.spec.containers[0].imagePullPolicy: Unsupported value: "always"`}},
		{"requests above limits", container(func(c *Container) { c.Resources.Requests["cpu"] = "2" }),
			[]string{`spec.template.spec.containers[0].resources.requests[cpu]: Invalid value: "2": must be less than or equal to cpu limit of 200m`}},
		{"bad quantity and resource name", container(func(c *Container) { c.Resources.Limits["memory"] = "1 GB"; c.Resources.Limits["cpus"] = "1" }),
			[]string{
				`spec.template.spec.containers[0].resources.limits[memory]: Invalid value: "1 GB": quantities must match the regular expression`,
				`spec.template.spec.containers[0].resources.limits[cpus]: Invalid value: "cpus": must be a standard resource for containers`,
			}},
		{"negative quantity", container(func(c *Container) { c.Resources.Requests["cpu"] = "-1" }),
			[]string{`resources.requests[cpu]: Invalid value: "-1": must be greater than or equal to 0`}},
		{"probe with two handlers", container(func(c *Container) { c.ReadinessProbe.TcpSocket = &TCPSocketAction{Port: "80"} }),
			[]string{"spec.template.spec.containers[0].readinessProbe: Forbidden: may not specify more than 1 handler type"}},
		{"probe without handler", container(func(c *Container) { c.LivenessProbe = &Probe{SuccessThreshold: 2} }),
			[]string{
				"spec.template.spec.containers[0].livenessProbe: Required value: must specify a handler type",
				"spec.template.spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
			}},
		{"probe port", container(func(c *Container) { c.ReadinessProbe.HttpGet.Port = "HTTP_PORT" }),
			[]string{`spec.template.spec.containers[0].readinessProbe.httpGet.port: Invalid value: "HTTP_PORT"`}},
		{"env", container(func(c *Container) {
			c.Env = []*EnvVar{{Name: ""}, {Name: "A", Value: "x", ValueFrom: &EnvVarSource{SecretKeyRef: &SecretKeySelector{Name: "s"}}}, {Name: "B", ValueFrom: &EnvVarSource{FieldRef: &ObjectFieldSelector{FieldPath: "spec.hostname"}}}}
		}), []string{
			"spec.template.spec.containers[0].env[0].name: Required value",
			"spec.template.spec.containers[0].env[1].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
			"spec.template.spec.containers[0].env[1].valueFrom.secretKeyRef.key: Required value",
			`spec.template.spec.containers[0].env[2].valueFrom.fieldRef.fieldPath: Unsupported value: "spec.hostname"`,
		}},
		{"volumes", pod(func(s *PodSpec) {
			s.Volumes = append(s.Volumes, &Volume{Name: "data", HostPath: &HostPathVolumeSource{}}, &Volume{Name: "x", EmptyDir: &EmptyDirVolumeSource{}, Secret: &SecretVolumeSource{SecretName: "s"}}, &Volume{Name: "y"})
		}), []string{
			`spec.template.spec.volumes[1].name: Duplicate value: "data"`,
			"spec.template.spec.volumes[1].hostPath.path: Required value",
			"spec.template.spec.volumes[2]: Forbidden: may not specify more than 1 volume type",
			"spec.template.spec.volumes[3]: Required value: must specify a volume type",
		}},
		{"mount of a missing volume", container(func(c *Container) {
			c.VolumeMounts = append(c.VolumeMounts, &VolumeMount{Name: "cache", MountPath: "/data", SubPath: "../x"})
		}), []string{
			`spec.template.spec.containers[0].volumeMounts[1].name: Not found: "cache"`,
			`spec.template.spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/data": must be unique`,
			`spec.template.spec.containers[0].volumeMounts[1].subPath: Invalid value: "../x": must not contain '..'`,
		}},
		{"tolerations", pod(func(s *PodSpec) {
			s.Tolerations = []*Toleration{{Key: "a", Operator: "Equals"}, {Operator: "Equal", Value: "x"}, {Key: "b", Operator: "Exists", Value: "v", TolerationSeconds: gproto.Int64(5)}}
		}), []string{
			`spec.template.spec.tolerations[0].operator: Unsupported value: "Equals": supported values: "Equal", "Exists"`,
			"spec.template.spec.tolerations[1].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty",
			"spec.template.spec.tolerations[2].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
			"spec.template.spec.tolerations[2].effect: Invalid value: \"\": effect must be 'NoExecute' when `tolerationSeconds` is set",
		}},
		{"node affinity", pod(func(s *PodSpec) {
			s.Affinity = &Affinity{NodeAffinity: &NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &NodeSelector{NodeSelectorTerms: []*NodeSelectorTerm{{MatchExpressions: []*NodeSelectorRequirement{
					{Key: "zone", Operator: "in", Values: []string{"a"}}, {Key: "zone", Operator: "In"}, {Key: "cpus", Operator: "Gt", Values: []string{"many"}},
				}}}},
				PreferredDuringSchedulingIgnoredDuringExecution: []*PreferredSchedulingTerm{{Weight: 0, Preference: &NodeSelectorTerm{}}},
			}}
		}), []string{
			`spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: Unsupported value: "in"`,
			"nodeSelectorTerms[0].matchExpressions[1].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
			`nodeSelectorTerms[0].matchExpressions[2].values[0]: Invalid value: "many": must be an integer`,
			"spec.template.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 0: must be in the range 1-100",
		}},

		{"selector missing", deploy(func(d *Deployment) { d.Spec.Selector = nil }),
			[]string{"spec.selector: Required value"}},
		{"selector empty", deploy(func(d *Deployment) { d.Spec.Selector = &LabelSelector{} }),
			[]string{"spec.selector: Invalid value"}},
		{"selector does not match", deploy(func(d *Deployment) { d.Spec.Selector.MatchLabels["app"] = "api" }),
			[]string{"spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"}},
		{"selector operator", deploy(func(d *Deployment) {
			d.Spec.Selector.MatchExpressions = []*LabelSelectorRequirement{{Key: "tier", Operator: "Gt", Values: []string{"1"}}}
		}), []string{`spec.selector.matchExpressions[0].operator: Unsupported value: "Gt"`}},
		{"replicas", deploy(func(d *Deployment) { d.Spec.Replicas = gproto.Int32(-1) }),
			[]string{"spec.replicas: Invalid value: -1: must be greater than or equal to 0"}},
		{"strategy type", deploy(func(d *Deployment) { d.Spec.Strategy = &DeploymentStrategy{Type: "BlueGreen"} }),
			[]string{`spec.strategy.type: Unsupported value: "BlueGreen": supported values: "RollingUpdate", "Recreate"`}},
		{"rolling update both zero", deploy(func(d *Deployment) {
			d.Spec.Strategy = &DeploymentStrategy{Type: "RollingUpdate", RollingUpdate: &RollingUpdateDeployment{MaxSurge: "0%", MaxUnavailable: "0"}}
		}), []string{"spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0\": may not be 0 when `maxSurge` is 0"}},
		{"rolling update values", deploy(func(d *Deployment) {
			d.Spec.Strategy = &DeploymentStrategy{Type: "RollingUpdate", RollingUpdate: &RollingUpdateDeployment{MaxSurge: "a lot", MaxUnavailable: "150%"}}
		}), []string{
			`spec.strategy.rollingUpdate.maxSurge: Invalid value: "a lot": a valid percent string must be`,
			`spec.strategy.rollingUpdate.maxUnavailable: Invalid value: "150%": must not be greater than 100%`,
		}},
		{"recreate with rollingUpdate", deploy(func(d *Deployment) {
			d.Spec.Strategy = &DeploymentStrategy{Type: "Recreate", RollingUpdate: &RollingUpdateDeployment{}}
		}), []string{"spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"}},
		{"daemonset rolling update", func(t *testing.T) *Object {
			o := mustDecode(t, validDaemonSet)
			o.GetDaemonSet().Spec.UpdateStrategy = &DaemonSetUpdateStrategy{RollingUpdate: &RollingUpdateDaemonSet{MaxSurge: "1", MaxUnavailable: "10%"}}
			return o
		}, []string{`spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: "1": may not be set when maxUnavailable is non-zero`}},
		{"daemonset rolling update zero", func(t *testing.T) *Object {
			o := mustDecode(t, validDaemonSet)
			o.GetDaemonSet().Spec.UpdateStrategy = &DaemonSetUpdateStrategy{Type: "OnDelete", RollingUpdate: &RollingUpdateDaemonSet{MaxUnavailable: "0"}}
			return o
		}, []string{
			"spec.updateStrategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'OnDelete'",
			"spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: \"0\": may not be 0 when `maxSurge` is 0",
		}},
		{"progress deadline", deploy(func(d *Deployment) {
			d.Spec.MinReadySeconds = 10
			d.Spec.ProgressDeadlineSeconds = gproto.Int32(5)
		}), []string{"spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds"}},

		{"service without ports", service(func(s *Service) { s.Spec.Ports = nil }),
			[]string{"spec.ports: Required value"}},
		{"headless service without ports is fine", service(func(s *Service) { s.Spec.Ports = nil; s.Spec.ClusterIp = "None" }), nil},
		{"service name is a label", service(func(s *Service) { s.Metadata.Name = "web.v2" }),
			[]string{`metadata.name: Invalid value: "web.v2": must not contain dots`}},
		{"service type", service(func(s *Service) { s.Spec.Type = "LoadBalancer" }),
			[]string{`spec.type: Unsupported value: "LoadBalancer": supported values: "ClusterIP", "NodePort"`}},
		{"service ports", service(func(s *Service) {
			s.Spec.Ports = append(s.Spec.Ports, &ServicePort{Port: 0, TargetPort: "Web_Port"}, &ServicePort{Name: "http", Port: 80, NodePort: 30001})
		}), []string{
			"spec.ports[1].name: Required value",
			"spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
			`spec.ports[1].targetPort: Invalid value: "Web_Port"`,
			`spec.ports[2].name: Duplicate value: "http"`,
			"spec.ports[2].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
			`spec.ports[2]: Duplicate value: {"port":80,"protocol":"TCP"}`,
		}},
		{"nodePort range", service(func(s *Service) { s.Spec.Type = "NodePort"; s.Spec.Ports[0].NodePort = 70000 }),
			[]string{"spec.ports[0].nodePort: Invalid value: 70000: must be between 1 and 65535, inclusive"}},
		{"targetPort number", service(func(s *Service) { s.Spec.Ports[0].TargetPort = "70000" }),
			[]string{"spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"}},
		{"clusterIP", service(func(s *Service) { s.Spec.ClusterIp = "10.0.0.300" }),
			[]string{`spec.clusterIP: Invalid value: "10.0.0.300": must be a valid IP address`}},

		{"configmap keys", func(t *testing.T) *Object {
			return Wrap(&ConfigMap{Metadata: &ObjectMeta{Name: "c"}, Data: map[string]string{"bad key": "v", "ok": "v"}, BinaryData: map[string][]byte{"ok": nil}})
		}, []string{
			`data[bad key]: Invalid value: "bad key": a valid config key must consist of alphanumeric characters`,
			`binaryData[ok]: Invalid value: "ok": duplicate of key present in data`,
		}},
		{"secret keys", func(t *testing.T) *Object {
			return Wrap(&Secret{Metadata: &ObjectMeta{Name: "s"}, Data: map[string][]byte{"../x": nil}, StringData: map[string]string{"a/b": ""}, Type: "kubernetes.io/tls"})
		}, []string{
			`data[../x]: Invalid value: "../x"`,
			`stringData[a/b]: Invalid value: "a/b"`,
			"data[tls.crt]: Required value",
			"data[tls.key]: Required value",
		}},
		{"object too large", func(t *testing.T) *Object {
			return Wrap(&ConfigMap{Metadata: &ObjectMeta{Name: "big"}, Data: map[string]string{"a": strings.Repeat("x", MaxObjectBytes)}})
		}, []string{"Too long: the object is 1048", "more than MaxObjectBytes (1048576)"}},

		{"job restartPolicy", job(func(j *Job) { j.Spec.Template.Spec.RestartPolicy = "Always" }),
			[]string{`spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never"`}},
		{"job restartPolicy missing", job(func(j *Job) { j.Spec.Template.Spec.RestartPolicy = "" }),
			[]string{`spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"`}},
		{"job manual selector", job(func(j *Job) { j.Spec.ManualSelector = gproto.Bool(true); j.Spec.BackoffLimit = gproto.Int32(-1) }),
			[]string{"spec.selector: Required value", "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0"}},
		{"node taints and CIDR", func(t *testing.T) *Object {
			return Wrap(&Node{Metadata: &ObjectMeta{Name: "n1"}, Spec: &NodeSpec{PodCidr: "10.0.0.0/33", Taints: []*Taint{{Key: "a", Effect: "NoRun"}, {Effect: "NoSchedule"}}}})
		}, []string{
			`spec.podCIDR: Invalid value: "10.0.0.0/33"`,
			`spec.taints[0].effect: Unsupported value: "NoRun"`,
			"spec.taints[1].key: Required value",
		}},
		{"lease duration and transitions", func(t *testing.T) *Object {
			return Wrap(&Lease{Metadata: &ObjectMeta{Name: "n1", Namespace: "kube-node-lease"}, Spec: &LeaseSpec{LeaseDurationSeconds: gproto.Int32(0), LeaseTransitions: gproto.Int32(-1)}})
		}, []string{
			"spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
			"spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
		}},
		{"endpoints", func(t *testing.T) *Object {
			return Wrap(&Endpoints{Metadata: &ObjectMeta{Name: "e"}, Subsets: []*EndpointSubset{{Addresses: []*EndpointAddress{{Ip: "pod-1"}}, Ports: []*EndpointPort{{Port: 0}}}}})
		}, []string{`subsets[0].addresses[0].ip: Invalid value: "pod-1"`, "subsets[0].ports[0].port: Invalid value: 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.obj(t)
			err := Validate(o)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("not a *ValidationError: %T", err)
			}
			if ve.Kind != o.KindName() || ve.Name != o.Meta().GetName() && ve.Name != o.Meta().GetGenerateName() {
				t.Errorf("Kind, Name = %q, %q", ve.Kind, ve.Name)
			}
			for _, w := range tt.want {
				found := false
				for _, fe := range ve.Errors {
					if strings.Contains(fe.Error(), w) {
						found = true
					}
				}
				if !found {
					t.Errorf("no error contains %q; got:\n%s", w, strings.ReplaceAll(err.Error(), ", ", ",\n"))
				}
			}
		})
	}
}

// A status update is checked for size only, the size of the stored object
// with the new status: the rest is the stored object, checked when it was
// written.
func TestValidateStatusUpdate(t *testing.T) {
	noContainers := Wrap(&Pod{Metadata: &ObjectMeta{Name: "p", Namespace: "default"}, Spec: &PodSpec{}, Status: &PodStatus{Phase: "Running"}})
	if err := ValidateWithLimit(noContainers, 1<<10); err == nil {
		t.Fatal("ValidateWithLimit accepted a pod without containers")
	}
	if err := ValidateStatusUpdate(noContainers, 1<<10, 1<<10); err != nil {
		t.Errorf("ValidateStatusUpdate checked the spec: %v", err)
	}
	err := ValidateStatusUpdate(noContainers, 1<<10+1, 1<<10)
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != 1 || ve.Kind != "Pod" || ve.Name != "p" ||
		ve.Errors[0].Message != "Too long: the object is 1025 bytes, more than MaxObjectBytes (1024)" {
		t.Errorf("a status over the limit: %v", err)
	}
}

func TestValidationErrorFormat(t *testing.T) {
	one := &ValidationError{Kind: "Pod", Name: "web", Errors: []FieldError{{Path: "spec.containers", Message: "Required value"}}}
	if got, want := one.Error(), `Pod "web" is invalid: spec.containers: Required value`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	two := &ValidationError{Kind: "Pod", Name: "web", Errors: []FieldError{{Path: "a", Message: "x"}, {Message: "y"}}}
	if got, want := two.Error(), `Pod "web" is invalid: [a: x, y]`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if err := Validate(&Object{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty object: %v", err)
	}
	if err := Validate(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil object: %v", err)
	}
}

// TestValidateAfterDefaults checks that minimal manifests, as users write
// them, are valid once defaulted.
func TestValidateAfterDefaults(t *testing.T) {
	for _, s := range []string{validDeployment, validService, validJob,
		strings.Replace(validDeployment, "kind: Deployment", "kind: ReplicaSet", 1),
		validDaemonSet,
		"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox, livenessProbe: {exec: {command: [cat, /tmp/ok]}}}]}\n",
		"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {a: b}\n",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n",
	} {
		o := mustDecode(t, s)
		if err := Validate(o); err != nil {
			t.Errorf("%s before defaults: %v", o.KindName(), err)
		}
		SetDefaults(o)
		if err := Validate(o); err != nil {
			t.Errorf("%s after defaults: %v", o.KindName(), err)
		}
	}
}

// Errors about map entries come in key order whatever the map's iteration
// order, and valid maps give none.
func TestKeyErrorsInKeyOrder(t *testing.T) {
	labels := map[string]string{"ok": "fine", "b-": "x", "a-": "y", "c": "bad value!", "d": "fine"}
	want := ""
	for i := range 50 {
		errs := validateLabels(labels, newPath("metadata").Child("labels"))
		var got []string
		for _, e := range errs {
			got = append(got, e.Error())
		}
		s := strings.Join(got, "\n")
		if len(errs) != 3 || !strings.Contains(errs[0].Error(), "a-") || !strings.Contains(errs[1].Error(), "b-") || !strings.Contains(errs[2].Error(), "bad value!") {
			t.Fatalf("errors %q, want one for each of a-, b- and c, in that order", s)
		}
		if i > 0 && s != want {
			t.Fatalf("run %d: %q, before %q", i, s, want)
		}
		want = s
	}
	if errs := validateLabels(map[string]string{"app": "web", "tier": "db"}, newPath("l")); errs != nil {
		t.Fatalf("valid labels: %v", errs)
	}
	cm := &ConfigMap{Data: map[string]string{"z!": "1", "ok": "2"}, BinaryData: map[string][]byte{"ok": {1}, "a!": {2}}}
	errs := validateConfigMap(cm)
	if len(errs) != 3 || !strings.Contains(errs[0].Error(), "data[z!]") || !strings.Contains(errs[1].Error(), "binaryData[a!]") ||
		!strings.Contains(errs[2].Error(), "duplicate") {
		t.Fatalf("ConfigMap errors %v", errs)
	}
}

// BenchmarkValidatePod: what every pod write costs in validation, the test
// pod defaulted as the API server does.
func BenchmarkValidatePod(b *testing.B) {
	pod := loadPod(b)
	SetDefaults(pod)
	b.ReportAllocs()
	for b.Loop() {
		if err := Validate(pod); err != nil {
			b.Fatal(err)
		}
	}
}

// A fieldPath writes what the field.Path of the same steps writes, and a
// valid field's checks build no path at all.
func TestFieldPath(t *testing.T) {
	cases := []struct {
		got  *fieldPath
		want *field.Path
	}{
		{newPath("spec"), field.NewPath("spec")},
		{newPath("spec").Child("containers").Index(0).Child("env").Key("FOO"),
			field.NewPath("spec").Child("containers").Index(0).Child("env").Key("FOO")},
		{newPath("data").Key("a.b").Child("x"), field.NewPath("data").Key("a.b").Child("x")},
		{newPath("subsets").Index(12).Index(3), field.NewPath("subsets").Index(12).Index(3)},
	}
	for _, c := range cases {
		if c.got.String() != c.want.String() {
			t.Errorf("fieldPath %q, field.Path %q", c.got.String(), c.want.String())
		}
		e := invalid(c.got, "v", "bad")
		if w := field.Invalid(c.want, "v", "bad"); e.Error() != w.Error() {
			t.Errorf("error %q, want %q", e.Error(), w.Error())
		}
	}
	labels := map[string]string{"app": "web", "tier": "db"}
	allocs := testing.AllocsPerRun(100, func() {
		p := newPath("metadata")
		for i := range 3 {
			if errs := validateLabels(labels, p.Child("items").Index(i).Child("labels")); errs != nil {
				t.Fatal(errs)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("valid labels: %v allocations per run, want none", allocs)
	}
}
