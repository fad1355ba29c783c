package controllers_test

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

// podCounter is the example controller of docs/controllers.md: it
// annotates each namespace with the number of pods in it.
type podCounter struct {
	*controllers.Loop
	env  controllers.Env
	pods *controllers.Informer
}

func podCounterRegistration() controllers.Registration {
	return controllers.Registration{Name: "podcounter", New: func(env controllers.Env) (controllers.Controller, error) {
		c := &podCounter{env: env, pods: env.Informers.For("Pod")}
		ns := env.Informers.For("Namespace")
		c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{WaitFor: []*controllers.Informer{c.pods, ns}})
		ns.AddHandler(controllers.EnqueueObject(c.Queue()))
		c.pods.AddHandler(controllers.EnqueueKeys(c.Queue(), func(o *pb.Object) []string {
			return []string{o.Meta().GetNamespace()}
		}))
		return c.Loop, nil
	}}
}

func (c *podCounter) Reconcile(ctx context.Context, key string) (controllers.Result, error) {
	obj, ok := c.env.Informers.For("Namespace").Get(key)
	if !ok {
		return controllers.Result{}, nil
	}
	want := strconv.Itoa(len(c.pods.ByIndex(controllers.IndexNamespace, key)))
	if obj.Meta().GetAnnotations()["example.com/pods"] == want {
		return controllers.Result{}, nil
	}
	next := obj.Clone()
	if next.Meta().Annotations == nil {
		next.Meta().Annotations = map[string]string{}
	}
	next.Meta().Annotations["example.com/pods"] = want
	_, err := c.env.Cluster.Update(ctx, next)
	return controllers.Result{}, err
}

func TestDocsExampleController(t *testing.T) {
	h := controllertest.NewHarness(t, pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "default"}}), pod("default", "a", nil, ""))
	c, err := podCounterRegistration().New(h.Env("podcounter"))
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	ctx, cancel := context.WithCancel(h.Context())
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	count := func(n string) func() bool {
		return func() bool {
			return h.Fake.Get("Namespace", "", "default").Meta().GetAnnotations()["example.com/pods"] == n
		}
	}
	h.Eventually(count("1"), "annotation 1")
	h.Fake.Add(pod("default", "b", nil, ""))
	h.Eventually(count("2"), "annotation 2")
}
