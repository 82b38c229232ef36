package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// TestBrowserWorkflowOnARobot submits a browser workflow through the
// control plane. Its requirements come from its steps, so of two robots it
// goes to the one with a browser, which drives the system Chromium against a
// page served here and returns the scraped rows as the job's result.
func TestBrowserWorkflowOnARobot(t *testing.T) {
	t.Parallel()
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><html><body><h1>Invoices</h1>
<table id="invoices">
  <tr><th>Number</th><th>Customer</th><th>Total</th></tr>
  <tr><td>INV-1</td><td>Acme</td><td>120.50</td></tr>
  <tr><td>INV-2</td><td>Globex</td><td>99.00</td></tr>
</table></body></html>`)
	}))
	defer page.Close()

	s := startServer(t, t.TempDir())
	f := newFleet(t, s)
	f.enrol("plain", "--no-browser")
	f.enrol("web", withBrowser)
	waitStatuses(t, s, map[string]string{"plain": "IDLE", "web": "IDLE"}, 30*time.Second)

	wf := workflow("invoices",
		step("open", "browser.navigate", map[string]any{"url": "${{ inputs.url }}"}),
		step("rows", "browser.scrape", map[string]any{"selector": "#invoices"}))
	wf.Outputs = map[string]string{"rows": "${{ steps.rows.outputs.rows }}", "count": "${{ steps.rows.outputs.count }}"}
	job := f.submit(wf, func(r *casarev1.SubmitJobRequest) {
		r.Inputs = mustStruct(map[string]any{"url": page.URL})
	})
	done := f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 60*time.Second)
	if robot := f.ids[done.GetRobotId()]; robot != "web" {
		t.Errorf("the browser job ran on %q, want the robot with a browser", robot)
	}
	want := map[string]any{
		"count": float64(2),
		"rows": []any{
			map[string]any{"Number": "INV-1", "Customer": "Acme", "Total": "120.50"},
			map[string]any{"Number": "INV-2", "Customer": "Globex", "Total": "99.00"},
		},
	}
	if diff := cmp.Diff(want, done.GetResult().AsMap()); diff != "" {
		t.Fatalf("result (-want +got):\n%s", diff)
	}
}

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}
