package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// TestArtifacts runs a workflow that keeps a file it wrote and a
// screenshot of a page served here, then lists and downloads both with
// casarectl. A robot that does not hold a job cannot add to it.
func TestArtifacts(t *testing.T) {
	t.Parallel()
	// One after the other: each drives a Chromium, and the machine may
	// have two cores.
	t.Run("embedded", func(t *testing.T) {
		artifacts(t, startServer(t, t.TempDir(), jobServerFlags...))
	})
	t.Run("postgres+redis", func(t *testing.T) {
		artifacts(t, startServer(t, t.TempDir(), append(slices.Clone(jobServerFlags),
			"--database-url", registrytest.DatabaseURL(t), "--redis-url", queuetest.RedisURL(t, 11))...))
	})
}

// report is the file the workflow writes and keeps.
const report = "number,customer,total\nINV-1,Acme,120.50\nINV-2,Globex,99.00\n"

func artifacts(t *testing.T, s *serverProc) {
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><html><body style="background:#fff"><h1>Invoices</h1><p>2 open</p></body></html>`)
	}))
	defer page.Close()

	f := newFleet(t, s)
	f.enrol("web", withBrowser)
	waitStatuses(t, s, map[string]string{"web": "IDLE"}, 30*time.Second)
	wf := workflow("keep-files",
		step("write", "file.write", map[string]any{"path": "out/report.csv", "content": report}),
		step("keep", "artifact.save", map[string]any{"path": "${{ steps.write.outputs.path }}"}),
		step("open", "browser.navigate", map[string]any{"url": "${{ inputs.url }}"}),
		step("shot", "browser.screenshot", map[string]any{}))
	wf.Outputs = map[string]string{"kept": "${{ steps.keep.outputs.name }}", "size": "${{ steps.keep.outputs.size }}"}
	job := f.submit(wf, func(r *casarev1.SubmitJobRequest) {
		r.Inputs = mustStruct(map[string]any{"url": page.URL})
	})
	done := f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 90*time.Second)
	if got := done.GetResult().AsMap(); got["kept"] != "report.csv" || got["size"] != float64(len(report)) {
		t.Errorf("artifact.save outputs %v, want report.csv of %d bytes", got, len(report))
	}

	// The list, as a table and as JSON.
	table := string(ctl(t, s, "jobs", "artifacts", job.GetId()))
	for _, want := range []string{"NAME", "report.csv", "text/csv", "screenshot-1.png", "image/png"} {
		if !strings.Contains(table, want) {
			t.Errorf("jobs artifacts table lacks %q:\n%s", want, table)
		}
	}
	var list struct {
		Artifacts []struct {
			Name, ContentType, Sha256 string
			Size                      string // int64 in protojson
			Attempt                   int32
			CreatedAt                 time.Time
		}
	}
	if err := json.Unmarshal(ctl(t, s, "jobs", "artifacts", job.GetId(), "-o", "json"), &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	digests := map[string]string{}
	for _, a := range list.Artifacts {
		names = append(names, a.Name)
		digests[a.Name] = a.Sha256
		if a.Attempt != 1 || a.CreatedAt.IsZero() {
			t.Errorf("artifact %s: attempt %d, created %v", a.Name, a.Attempt, a.CreatedAt)
		}
	}
	if want := []string{"report.csv", "screenshot-1.png"}; !slices.Equal(names, want) {
		t.Fatalf("artifacts %v, want %v", names, want)
	}
	if sum := sha256.Sum256([]byte(report)); digests["report.csv"] != hex.EncodeToString(sum[:]) {
		t.Errorf("report.csv listed with SHA-256 %s", digests["report.csv"])
	}

	// The bytes come back as they were.
	dir := t.TempDir()
	out := filepath.Join(dir, "report.csv")
	ctl(t, s, "jobs", "artifact", job.GetId(), "report.csv", "-f", out)
	if b, err := os.ReadFile(out); err != nil || string(b) != report {
		t.Fatalf("downloaded report.csv: %q, %v; want %q", b, err, report)
	}
	shot := filepath.Join(dir, "shot.png")
	ctl(t, s, "jobs", "artifact", job.GetId(), "screenshot-1.png", "-f", shot)
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("the screenshot is not a PNG: % x", png[:min(len(png), 16)])
	}
	if sum := sha256.Sum256(png); digests["screenshot-1.png"] != hex.EncodeToString(sum[:]) {
		t.Errorf("the screenshot's bytes do not match the SHA-256 listed")
	}
	if stdout := ctl(t, s, "jobs", "artifact", job.GetId(), "report.csv", "-f", "-"); string(stdout) != report {
		t.Errorf("-f - wrote %q to stdout", stdout)
	}
	// The default file is ./NAME, never overwritten without --force.
	code, stderr := ctlIn(t, s, dir, "jobs", "artifact", job.GetId(), "report.csv")
	if code != 2 || !strings.Contains(stderr, "exists; pass --force") {
		t.Errorf("download over an existing file: exit %d, %s", code, stderr)
	}
	os.WriteFile(out, []byte("old"), 0o644)
	if code, stderr := ctlIn(t, s, dir, "jobs", "artifact", job.GetId(), "report.csv", "--force"); code != 0 {
		t.Fatalf("download with --force: exit %d, %s", code, stderr)
	}
	if b, _ := os.ReadFile(out); string(b) != report {
		t.Errorf("after --force the file holds %q", b)
	}
	if code, stderr := ctlIn(t, s, dir, "jobs", "artifact", job.GetId(), "missing.png"); code != 2 || !strings.Contains(stderr, `has no artifact "missing.png"`) {
		t.Errorf("a missing artifact: exit %d, %s", code, stderr)
	}
	if code, stderr := ctlIn(t, s, dir, "jobs", "artifacts", "no-such-job"); code != 2 || !strings.Contains(stderr, `job "no-such-job" not found`) {
		t.Errorf("artifacts of a missing job: exit %d, %s", code, stderr)
	}

	// A robot writes only into a job it holds, on the attempt it holds.
	fakeDir := filepath.Join(t.TempDir(), "fake")
	if out, err := agentCmd("enroll", "--token", enrollmentToken(t, s, "fake", "--labels", "kind=fake"), "--dir", fakeDir); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(fakeDir, "robot.crt"), filepath.Join(fakeDir, "robot.key"))
	if err != nil {
		t.Fatal(err)
	}
	addr := quicListening.FindStringSubmatch(s.log.String())[1]
	fake := dialRobot(t, addr, cert, robotID(t, fakeDir))
	held := f.submit(sleeper("1s"), func(r *casarev1.SubmitJobRequest) {
		r.Requires = &casarev1.Requirements{Labels: map[string]string{"kind": "fake"}}
	})
	var assign *agentv1.JobAssign
	for assign == nil {
		assign = fake.next(t).GetJobAssign()
	}
	fake.send(t, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobAccept{JobAccept: &agentv1.JobAccept{JobId: held.GetId(), Attempt: 1}}})
	fake.runs(&agentv1.RunningJob{JobId: held.GetId(), Attempt: 1})
	f.wait(held.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 10*time.Second)
	// The fake robot's one slot is taken: this job goes to the agent.
	elsewhere := f.submit(sleeper("60s"))
	if got := f.wait(elsewhere.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 10*time.Second); f.ids[got.GetRobotId()] != "web" {
		t.Fatalf("the long job runs on %q, want web", got.GetRobotId())
	}
	t.Cleanup(func() {
		f.jobs.CancelJob(context.Background(), &casarev1.CancelJobRequest{Id: elsewhere.GetId()})
	})

	tests := []struct {
		name    string
		jobID   string
		attempt int32
		refused string
	}{
		{"AnotherRobotsRunningJob", elsewhere.GetId(), 1, "does not hold job"},
		{"AFinishedJob", job.GetId(), 1, "does not hold job"},
		{"AnotherAttempt", held.GetId(), 2, "does not hold job"},
		{"NoSuchJob", "no-such-job", 1, "does not exist"},
		{"HeldJob", held.GetId(), 1, ""},
	}
	for _, tt := range tests {
		answer := fake.sendArtifact(t, &agentv1.ArtifactHeader{JobId: tt.jobID, Attempt: tt.attempt, Name: "intruder.txt", ContentType: "text/plain"}, []byte(tt.name))
		if tt.refused == "" {
			if answer.GetError() != "" {
				t.Errorf("%s: refused: %s", tt.name, answer.GetError())
			}
			continue
		}
		if !strings.Contains(answer.GetError(), tt.refused) || answer.GetTemporary() {
			t.Errorf("%s: answered %v, want refused for good with %q", tt.name, answer, tt.refused)
		}
	}
	waitLog(t, s.log, "refused an artifact", 4)
	if names := artifactNames(t, s, job.GetId()); !slices.Equal(names, []string{"report.csv", "screenshot-1.png"}) {
		t.Errorf("after refused artifacts the job has %v", names)
	}
	if names := artifactNames(t, s, elsewhere.GetId()); len(names) != 0 {
		t.Errorf("a job running on another robot took an artifact: %v", names)
	}
	if names := artifactNames(t, s, held.GetId()); !slices.Equal(names, []string{"intruder.txt"}) {
		t.Errorf("the held job has %v, want the artifact its robot sent", names)
	}
	if stdout := ctl(t, s, "jobs", "artifact", held.GetId(), "intruder.txt", "-f", "-"); string(stdout) != "HeldJob" {
		t.Errorf("the held job's artifact holds %q", stdout)
	}
}

// sendArtifact sends an artifact on a stream of its own and returns the
// control plane's answer.
func (r *rawRobot) sendArtifact(t *testing.T, hdr *agentv1.ArtifactHeader, data []byte) *agentv1.ArtifactStored {
	t.Helper()
	s, err := r.conn.OpenUniStream()
	if err != nil {
		t.Fatal(err)
	}
	// The control plane may refuse on the header alone and stop reading;
	// the write then fails, and the answer still comes on the control
	// stream.
	var refused *quic.StreamError
	if err := agentv1.WriteArtifact(s, hdr, data); err != nil && !(errors.As(err, &refused) && refused.Remote) {
		t.Fatal(err)
	}
	s.Close()
	for {
		if a := r.next(t).GetArtifactStored(); a != nil {
			if a.GetJobId() != hdr.GetJobId() || a.GetName() != hdr.GetName() || a.GetAttempt() != hdr.GetAttempt() {
				t.Fatalf("answer %v to artifact %v", a, hdr)
			}
			return a
		}
	}
}

func artifactNames(t *testing.T, s *serverProc, jobID string) []string {
	t.Helper()
	var list struct{ Artifacts []struct{ Name string } }
	if err := json.Unmarshal(ctl(t, s, "jobs", "artifacts", jobID, "-o", "json"), &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range list.Artifacts {
		names = append(names, a.Name)
	}
	return names
}

// ctlIn runs casarectl in dir and returns its exit code and stderr.
func ctlIn(t *testing.T, s *serverProc, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "casarectl"), args...)
	cmd.Dir = dir
	cmd.Env = append(filterEnv(os.Environ(), "CASARE_"), "CASARE_SERVER="+s.url(), "CASARE_TOKEN="+s.adminToken())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stderr.String()
}
