package cli

import (
	"reflect"
	"strings"
	"testing"

	pb "github.com/skiff-sh/skiff/proto"
)

func TestParsePortSpecs(t *testing.T) {
	pod := pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: "web"}, Spec: &pb.PodSpec{Containers: []*pb.Container{
		{Name: "app", Ports: []*pb.ContainerPort{{Name: "http", ContainerPort: 8080}}},
		{Name: "side", Ports: []*pb.ContainerPort{{Name: "metrics", ContainerPort: 9100}}},
	}}})
	for _, tc := range []struct {
		args []string
		want []forwardPort
		err  string
	}{
		{args: []string{"8080"}, want: []forwardPort{{8080, 8080}}},
		{args: []string{"9000:8080"}, want: []forwardPort{{9000, 8080}}},
		{args: []string{":8080"}, want: []forwardPort{{0, 8080}}},
		{args: []string{"0:8080"}, want: []forwardPort{{0, 8080}}},
		{args: []string{"5000", "6000:http"}, want: []forwardPort{{5000, 5000}, {6000, 8080}}},
		{args: []string{"metrics"}, want: []forwardPort{{9100, 9100}}},
		{args: []string{":http"}, want: []forwardPort{{0, 8080}}},
		{args: []string{"abc:8080"}, err: `port "abc:8080": local port "abc" must be a number from 0 to 65535`},
		{args: []string{"8080", "70000:80"}, err: `port "70000:80": local port "70000"`},
		{args: []string{"9000:0"}, err: `port "9000:0": remote port "0" must be a number from 1 to 65535 or a port name`},
		{args: []string{"70000"}, err: `port "70000": remote port "70000"`},
		{args: []string{"8080:"}, err: `port "8080:": remote port ""`},
		{args: []string{"1:2:3"}, err: `port "1:2:3": give [LOCAL_PORT:]REMOTE_PORT`},
		{args: []string{"Http"}, err: `port "Http": remote port "Http"`},
		{args: []string{"grpc"}, err: `pod web does not have a named port "grpc"`},
	} {
		specs, err := parsePortSpecs(tc.args)
		var got []forwardPort
		if err == nil {
			got, err = podPorts(specs, pod)
		}
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: %v, want an error with %q", tc.args, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.err == "" && !reflect.DeepEqual(got, tc.want):
			t.Errorf("%q: %v, want %v", tc.args, got, tc.want)
		}
	}
}

// A service's port forwards to its targetPort on the pod (a name is one of
// the pod's container ports; none is the port itself); without a local
// port of its own the command listens on the service's port, as kubectl's.
func TestServicePortsTargetPort(t *testing.T) {
	pod := pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: "web-abc"}, Spec: &pb.PodSpec{Containers: []*pb.Container{
		{Name: "app", Ports: []*pb.ContainerPort{{Name: "http", ContainerPort: 8080}}},
	}}})
	svc := pb.Wrap(&pb.Service{Metadata: &pb.ObjectMeta{Name: "web"}, Spec: &pb.ServiceSpec{Ports: []*pb.ServicePort{
		{Name: "web", Port: 80, TargetPort: "http"},
		{Name: "alt", Port: 81, TargetPort: "8081"},
		{Name: "same", Port: 82},
		{Name: "bad", Port: 83, TargetPort: "grpc"},
	}}})
	for _, tc := range []struct {
		args []string
		want []forwardPort
		err  string
	}{
		{args: []string{"80"}, want: []forwardPort{{80, 8080}}},
		{args: []string{"9000:80"}, want: []forwardPort{{9000, 8080}}},
		{args: []string{":80"}, want: []forwardPort{{0, 8080}}},
		{args: []string{"web"}, want: []forwardPort{{80, 8080}}},
		{args: []string{"9000:web", "81", "82"}, want: []forwardPort{{9000, 8080}, {81, 8081}, {82, 82}}},
		{args: []string{"8080"}, err: "service web does not have a service port 8080"},
		{args: []string{"http"}, err: `service web does not have a port named "http"`},
		{args: []string{"83"}, err: `service web port 83 has targetPort "grpc": pod web-abc does not have a named port "grpc"`},
	} {
		specs, err := parsePortSpecs(tc.args)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		got, err := servicePorts(specs, svc, pod)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: %v, want an error with %q", tc.args, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.err == "" && !reflect.DeepEqual(got, tc.want):
			t.Errorf("%q: %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestListenAddresses(t *testing.T) {
	got, err := listenAddresses([]string{"localhost", "10.0.0.1"})
	if want := []string{"127.0.0.1", "::1", "10.0.0.1"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %v %v, want %v", got, err, want)
	}
	if _, err := listenAddresses([]string{"example.com"}); err == nil || !strings.Contains(err.Error(), `--address "example.com"`) {
		t.Errorf("a host name: %v, want an error naming it", err)
	}
}
