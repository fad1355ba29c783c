package worker

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/api/resource"

	pb "github.com/skiff-sh/skiff/proto"
)

// hostFacts is what a node reports about its machine.
type hostFacts struct {
	cpu, memory string // quantities
	info        *pb.NodeSystemInfo
	hostname    string
}

// detectHost reads the machine's CPU count, memory and system information.
func detectHost(version string) hostFacts {
	f := hostFacts{cpu: strconv.Itoa(runtime.NumCPU()), memory: memTotal()}
	f.hostname, _ = os.Hostname()
	var uts unix.Utsname
	kernel := ""
	if unix.Uname(&uts) == nil {
		kernel = unix.ByteSliceToString(uts.Release[:])
	}
	f.info = &pb.NodeSystemInfo{
		MachineId:               readTrim("/etc/machine-id"),
		BootId:                  readTrim("/proc/sys/kernel/random/boot_id"),
		KernelVersion:           kernel,
		OsImage:                 osImage(),
		ContainerRuntimeVersion: "libcontainer://" + version,
		KubeletVersion:          version,
		OperatingSystem:         runtime.GOOS,
		Architecture:            runtime.GOARCH,
	}
	return f
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// memTotal is MemTotal from /proc/meminfo as a Ki quantity, as the kubelet
// reports it.
func memTotal() string {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return "0"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			return fields[1] + "Ki"
		}
	}
	return "0"
}

func osImage() string {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return runtime.GOOS
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return runtime.GOOS
}

// routeIP returns the local address of the route to addr (host:port): the
// address a master at addr sees this machine on.
func routeIP(addr string) (string, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", fmt.Errorf("find the local address towards %s: %w", addr, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// nodeDescription is the node as the worker describes it: the Node object
// the leader registers, and the status every heartbeat posts.
type nodeDescription struct {
	name      string
	labels    map[string]string
	capacity  map[string]string
	addresses []*pb.NodeAddress
	info      *pb.NodeSystemInfo
	port      int32
}

func newNodeDescription(cfg Config, facts hostFacts, nodeIP string, agentPort int) nodeDescription {
	d := nodeDescription{
		name: cfg.Name,
		labels: map[string]string{
			"kubernetes.io/hostname": cfg.Name,
			"kubernetes.io/os":       runtime.GOOS,
			"kubernetes.io/arch":     runtime.GOARCH,
		},
		capacity: map[string]string{"cpu": facts.cpu, "memory": facts.memory, "pods": strconv.Itoa(cfg.MaxPods)},
		info:     facts.info,
		port:     int32(agentPort),
	}
	if cfg.Hollow {
		d.labels["skiff.sh/hollow"] = "true"
	}
	for k, v := range cfg.Labels {
		d.labels[k] = v
	}
	if cfg.CapacityCPU != "" {
		d.capacity["cpu"] = canonical(cfg.CapacityCPU)
	}
	if cfg.CapacityMemory != "" {
		d.capacity["memory"] = canonical(cfg.CapacityMemory)
	}
	host := facts.hostname
	if host == "" || cfg.Hollow {
		host = cfg.Name
	}
	d.addresses = []*pb.NodeAddress{{Type: "InternalIP", Address: nodeIP}, {Type: "Hostname", Address: host}}
	return d
}

func canonical(q string) string {
	v, err := resource.ParseQuantity(q)
	if err != nil {
		return q
	}
	return v.String()
}

// status is the Node status the worker posts: Ready, with heartbeat time
// now and the transition time kept from prev while the status is the same.
func (d nodeDescription) status(now time.Time, prev *pb.NodeCondition) *pb.NodeStatus {
	ts := timestamppb.New(now.Truncate(time.Second))
	ready := &pb.NodeCondition{
		Type: "Ready", Status: "True", Reason: "KubeletReady", Message: "skiff worker is posting ready status",
		LastHeartbeatTime: ts, LastTransitionTime: ts,
	}
	if prev != nil && prev.GetStatus() == "True" && prev.GetLastTransitionTime() != nil {
		ready.LastTransitionTime = prev.GetLastTransitionTime()
	}
	capacity := make(map[string]string, len(d.capacity))
	alloc := make(map[string]string, len(d.capacity))
	for k, v := range d.capacity {
		capacity[k], alloc[k] = v, v
	}
	addrs := make([]*pb.NodeAddress, len(d.addresses))
	for i, a := range d.addresses {
		addrs[i] = &pb.NodeAddress{Type: a.Type, Address: a.Address}
	}
	return &pb.NodeStatus{
		Capacity:        capacity,
		Allocatable:     alloc,
		Conditions:      []*pb.NodeCondition{ready},
		Addresses:       addrs,
		NodeInfo:        d.info,
		DaemonEndpoints: &pb.NodeDaemonEndpoints{KubeletEndpoint: &pb.DaemonEndpoint{Port: d.port}},
	}
}

// node returns the Node object the leader registers.
func (d nodeDescription) node(now time.Time) *pb.Node {
	labels := make(map[string]string, len(d.labels))
	for k, v := range d.labels {
		labels[k] = v
	}
	return &pb.Node{
		ApiVersion: "v1",
		Kind:       "Node",
		Metadata:   &pb.ObjectMeta{Name: d.name, Labels: labels},
		Spec:       &pb.NodeSpec{},
		Status:     d.status(now, nil),
	}
}

// hostIP is the node's InternalIP.
func (d nodeDescription) hostIP() string {
	for _, a := range d.addresses {
		if a.Type == "InternalIP" {
			return a.Address
		}
	}
	return ""
}
