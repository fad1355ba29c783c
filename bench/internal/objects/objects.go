// Package objects builds the API objects the benchmarks write: 256-byte
// ConfigMaps for the write workloads, and realistic Pods and Nodes for the
// scale figures. It is shared by the benchmark program and the
// microbenchmarks so both measure the same payloads.
package objects

import (
	"fmt"
	"strings"
	"sync"

	pb "github.com/skiff-sh/skiff/proto"
)

// PayloadBytes is the size of one write of the write workloads: the encoded
// ConfigMap as the client sends it, and the value of an etcd Put.
const PayloadBytes = 256

// ConfigMap returns a ConfigMap whose encoded size (proto.Size of the
// Object) is exactly size bytes, padding one data value. Names of up to 63
// characters are supported. labels, if given, are part of the size.
func ConfigMap(namespace, name string, size int, labels ...map[string]string) *pb.Object {
	cm := &pb.ConfigMap{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: namespace},
		Data:     map[string]string{"v": ""},
	}
	if len(labels) > 0 {
		cm.Metadata.Labels = labels[0]
	}
	obj := pb.Wrap(cm)
	base := obj.SizeVT()
	pad := size - base
	if pad <= 0 {
		return obj
	}
	// The value's length prefix may grow with it: shrink by the excess
	// (at most a couple of rounds). The padding is a slice of one shared
	// string, so building a write costs the client little more than an
	// etcd Put of a fixed value does.
	n := min(pad, len(padding))
	for {
		cm.Data["v"] = padding[:n]
		over := obj.SizeVT() - size
		if over <= 0 || n == 0 {
			break
		}
		n = max(0, n-over)
	}
	return obj
}

// padding is what ConfigMap pads with.
var padding = strings.Repeat("x", 64<<10)

// Value returns an etcd value of n bytes.
func Value(n int) []byte { return []byte(strings.Repeat("x", n)) }

// podTemplate is a pod of the kind a Deployment creates: two containers with
// resources, probes, env and mounts, tolerations and affinity (about 1.5 KB
// encoded, close to what a real cluster stores per pod).
const podTemplate = `
apiVersion: v1
kind: Pod
metadata:
  name: template
  namespace: default
  labels: {app: api, tier: backend, release: stable}
  annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9090"}
  ownerReferences:
    - apiVersion: apps/v1
      kind: ReplicaSet
      name: api-7d9f8
      uid: 0b1e4a44-2b4f-4a8e-8d8a-7b1c1d9e2f33
      controller: true
      blockOwnerDeletion: true
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 30
  securityContext:
    runAsUser: 1000
    runAsNonRoot: true
    fsGroup: 2000
  containers:
    - name: api
      image: registry.example.com/api:v2.3.1
      args: ["--port=8080", "--config=/etc/api/config.yaml"]
      ports:
        - name: http
          containerPort: 8080
        - name: metrics
          containerPort: 9090
      env:
        - name: LOG_LEVEL
          value: info
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
      envFrom:
        - configMapRef:
            name: api-config
      resources:
        requests: {cpu: 250m, memory: 256Mi}
        limits: {cpu: "1", memory: 512Mi}
      volumeMounts:
        - name: config
          mountPath: /etc/api
          readOnly: true
        - name: cache
          mountPath: /var/cache/api
      livenessProbe:
        httpGet:
          path: /livez
          port: 8080
        initialDelaySeconds: 10
        periodSeconds: 10
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: 5
    - name: sidecar
      image: registry.example.com/log-shipper:1.4
      resources:
        requests: {cpu: 50m, memory: 64Mi}
        limits: {cpu: 200m, memory: 128Mi}
      volumeMounts:
        - name: cache
          mountPath: /var/cache/api
          readOnly: true
  volumes:
    - name: config
      configMap:
        name: api-config
    - name: cache
      emptyDir: {}
  tolerations:
    - key: node.kubernetes.io/not-ready
      operator: Exists
      effect: NoExecute
      tolerationSeconds: 300
  nodeSelector:
    kubernetes.io/os: linux
`

const nodeTemplate = `
apiVersion: v1
kind: Node
metadata:
  name: template
  labels:
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: zone-a
spec:
  podCIDR: 10.244.0.0/24
status:
  capacity: {cpu: "8", memory: 32Gi, pods: "110"}
  allocatable: {cpu: 7800m, memory: 31Gi, pods: "110"}
  conditions:
    - type: Ready
      status: "True"
      reason: KubeletReady
  addresses:
    - type: InternalIP
      address: 10.0.0.1
    - type: Hostname
      address: template
  nodeInfo:
    kernelVersion: 6.1.0
    osImage: Debian GNU/Linux 12
    containerRuntimeVersion: skiff://dev
    architecture: amd64
    operatingSystem: linux
`

var (
	once         sync.Once
	pod, node    *pb.Object
	templateErrs error
)

func templates() error {
	once.Do(func() {
		var err1, err2 error
		pod, err1 = pb.DecodeObject([]byte(podTemplate))
		node, err2 = pb.DecodeObject([]byte(nodeTemplate))
		if err1 != nil || err2 != nil {
			templateErrs = fmt.Errorf("benchmark object templates: pod: %v; node: %v", err1, err2)
		}
	})
	return templateErrs
}

// Pod returns a realistic pod bound to nodeName ("" for unbound) with the
// labels app=<app>, tier=backend, release=stable.
func Pod(namespace, name, nodeName, app string) (*pb.Object, error) {
	if err := templates(); err != nil {
		return nil, err
	}
	o := pod.Clone()
	m := o.Meta()
	m.Namespace, m.Name = namespace, name
	m.Labels["app"] = app
	o.GetPod().Spec.NodeName = nodeName
	return o, nil
}

// Node returns a realistic Ready node named name with internal IP ip.
func Node(name, ip string) (*pb.Object, error) {
	if err := templates(); err != nil {
		return nil, err
	}
	o := node.Clone()
	o.Meta().Name = name
	st := o.GetNode().Status
	st.Addresses[0].Address = ip
	st.Addresses[1].Address = name
	return o, nil
}
