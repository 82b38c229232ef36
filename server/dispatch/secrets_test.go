package dispatch

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/registry"
)

// fakeSecrets answers ForAssign with what it is given, noting the robots
// it was asked for.
type fakeSecrets struct {
	mu     sync.Mutex
	robots []AssignTarget
	err    error
}

func (f *fakeSecrets) ForAssign(_ context.Context, job *registry.Job, robot AssignTarget) (map[string]*structpb.Value, []*agentv1.AssignedAsset, error) {
	f.mu.Lock()
	f.robots = append(f.robots, robot)
	f.mu.Unlock()
	if f.err != nil {
		return nil, nil, f.err
	}
	return map[string]*structpb.Value{"pin": structpb.NewStringValue("1234")},
		[]*agentv1.AssignedAsset{{Name: "mail", Type: "text", Value: structpb.NewStringValue("hq-" + robot.Labels["site"])}}, nil
}

// TestAssignCarriesSecretsAndAssets: job_assign holds the job's stored
// inputs with its secret ones and the assets resolved for the robot's
// labels.
func TestAssignCarriesSecretsAndAssets(t *testing.T) {
	secrets := &fakeSecrets{}
	b := setup(t, func(o *Options) { o.Secrets = secrets })
	ctx := context.Background()
	job := b.submit(t, `{"url": "x"}`)
	var robot sent
	b.d.RobotUp(ctx, gateway.Robot{ID: "robot-1", Name: "r1", MaxJobs: 1, Labels: map[string]string{"site": "hq"}, Send: robot.send})
	b.d.Offer(job)
	deadline := time.Now().Add(30 * time.Second)
	var assign *agentv1.JobAssign
	for assign == nil {
		robot.mu.Lock()
		for _, m := range robot.msgs {
			if a := m.GetJobAssign(); a != nil {
				assign = a
			}
		}
		robot.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("no job_assign within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	in := assign.GetInputs().AsMap()
	if in["url"] != "x" || in["pin"] != "1234" {
		t.Errorf("job_assign inputs = %v; want the stored and the secret ones", in)
	}
	if len(assign.GetAssets()) != 1 || assign.GetAssets()[0].GetValue().GetStringValue() != "hq-hq" {
		t.Errorf("job_assign assets = %v; want mail resolved for site=hq", assign.GetAssets())
	}
}

// TestUnresolvedAssetsFailTheJob: a job whose assets cannot be given to
// its robot is never sent without them; it fails, saying why.
func TestUnresolvedAssetsFailTheJob(t *testing.T) {
	b := setup(t, func(o *Options) {
		o.Secrets = &fakeSecrets{err: errors.New("asset not resolved: asset mail no longer exists")}
	})
	ctx := context.Background()
	job := b.submit(t, `{}`)
	var robot sent
	b.d.RobotUp(ctx, gateway.Robot{ID: "robot-1", Name: "r1", MaxJobs: 1, Send: robot.send})
	b.d.Offer(job)
	failed := waitFor(t, b.reg, job.ID, func(j *registry.Job) bool { return j.Status.Finished() })
	if failed.Status != registry.JobFailed || !strings.Contains(failed.StatusMessage, "asset mail no longer exists") {
		t.Errorf("job %s: %q; want FAILED naming the asset", failed.Status, failed.StatusMessage)
	}
	if n := robot.assigns(); n != 0 {
		t.Errorf("the robot was sent %d job_assign, want none", n)
	}
}
