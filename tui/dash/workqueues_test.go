package dash

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"connectrpc.com/connect/v2"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
)

func fixtureWorkQueues() ([]*casarev1.WorkQueue, []*casarev1.WorkQueueStats) {
	queues := []*casarev1.WorkQueue{
		{Name: "invoices", MaxRetries: 2, UniqueReferences: true,
			Trigger: &casarev1.QueueTrigger{WorkflowName: "invoice-process", ItemsPerJob: 50, MaxJobs: 4, Enabled: true}},
		{Name: "onboarding", Trigger: &casarev1.QueueTrigger{WorkflowName: "new-hire"}},
		{Name: "returns"},
	}
	stats := []*casarev1.WorkQueueStats{
		{Queue: "invoices", Counts: map[string]int64{"NEW": 1250, "IN_PROGRESS": 4, "SUCCESSFUL": 98012, "FAILED": 17},
			ItemsPerMinute: 42.5, SlaBreaches: 3, OldestNew: ago(95 * time.Minute)},
		{Queue: "onboarding", Counts: map[string]int64{"SUCCESSFUL": 12, "FAILED": 1}},
		{Queue: "returns", Counts: map[string]int64{}},
	}
	return queues, stats
}

func fixtureWorkItems() []*casarev1.WorkItem {
	return []*casarev1.WorkItem{
		{Id: "019a2b3c-0000-7000-8000-0000000000a1", Queue: "invoices", Reference: "INV-1001", Status: casarev1.WorkItemStatus_WORK_ITEM_STATUS_FAILED,
			Exception: casarev1.WorkItemException_WORK_ITEM_EXCEPTION_APPLICATION, Reason: "portal timed out\nafter 30 s", Retry: 2,
			JobId: fixtureJobs()[0].GetId(), CreatedAt: ago(40 * time.Minute)},
		{Id: "019a2b3c-0000-7000-8000-0000000000a2", Queue: "invoices", Reference: "INV-1002", Status: casarev1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS,
			Priority: casarev1.WorkItemPriority_WORK_ITEM_PRIORITY_HIGH, JobId: fixtureJobs()[1].GetId(), CreatedAt: ago(3 * time.Minute)},
		{Id: "019a2b3c-0000-7000-8000-0000000000a3", Queue: "invoices", Reference: "INV-1003", Status: casarev1.WorkItemStatus_WORK_ITEM_STATUS_FAILED,
			Exception: casarev1.WorkItemException_WORK_ITEM_EXCEPTION_BUSINESS, Reason: "no invoice number", JobId: fixtureJobs()[1].GetId(), CreatedAt: ago(2 * time.Hour)},
		{Id: "019a2b3c-0000-7000-8000-0000000000a4", Queue: "invoices", Status: casarev1.WorkItemStatus_WORK_ITEM_STATUS_NEW,
			Priority: casarev1.WorkItemPriority_WORK_ITEM_PRIORITY_LOW, CreatedAt: ago(90 * time.Second)},
	}
}

// workQueueClient answers the dashboard's work queue calls from memory and
// records what it was asked.
type workQueueClient struct {
	casarev1connect.WorkQueueServiceClient

	mu       sync.Mutex
	queues   []*casarev1.WorkQueue
	stats    []*casarev1.WorkQueueStats
	items    []*casarev1.WorkItem
	more     bool
	listErr  error
	lists    int
	itemReqs []*casarev1.ListWorkItemsRequest
	retries  [][]string
}

func (c *workQueueClient) ListWorkQueues(context.Context, *casarev1.ListWorkQueuesRequest) (*casarev1.ListWorkQueuesResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lists++
	if c.listErr != nil {
		return nil, c.listErr
	}
	return &casarev1.ListWorkQueuesResponse{Queues: c.queues, Stats: c.stats}, nil
}

func (c *workQueueClient) ListWorkItems(_ context.Context, req *casarev1.ListWorkItemsRequest) (*casarev1.ListWorkItemsResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.itemReqs = append(c.itemReqs, req)
	res := &casarev1.ListWorkItemsResponse{Items: c.items}
	if c.more {
		res.NextPageToken = "next"
	}
	return res, nil
}

func (c *workQueueClient) RetryWorkItems(_ context.Context, req *casarev1.RetryWorkItemsRequest) (*casarev1.RetryWorkItemsResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.retries = append(c.retries, req.GetIds())
	return &casarev1.RetryWorkItemsResponse{Ids: []string{"019a2b3c-0000-7000-8000-0000000000b1"}}, nil
}

func newWorkQueueClient() *workQueueClient {
	queues, stats := fixtureWorkQueues()
	return &workQueueClient{queues: queues, stats: stats, items: fixtureWorkItems()}
}

// setupWorkQueues is a dashboard on the work queues view whose clock the
// test moves, answering from client.
func setupWorkQueues(t *testing.T, client *workQueueClient) (*Model, *time.Time) {
	t.Helper()
	now := clock
	m := New(context.Background(), Options{
		Server: "http://casare.test:8080", NoColor: true, Location: time.UTC,
		Now:     func() time.Time { return now },
		Clients: Clients{WorkQueues: client},
	})
	send(m, tea.WindowSizeMsg{Width: 120, Height: 16})
	send(m, batch{
		robots:  []robotOp{{kind: opReplace, robots: fixtureRobots()}},
		jobs:    []jobOp{{kind: opReplace, jobs: fixtureJobs()}},
		streams: map[string]streamState{"robots": {up: true}, "jobs": {up: true}},
	})
	typeText(m, ":workqueues")
	carryOut(m, press(m, "enter"))
	return m, &now
}

func TestWorkQueuesView(t *testing.T) {
	t.Parallel()
	t.Run("LoadsOnShowAndPolls", func(t *testing.T) {
		client := newWorkQueueClient()
		m, now := setupWorkQueues(t, client)
		if got := len(m.shownWorkQueues()); got != 3 || client.lists != 1 {
			t.Fatalf("shows %d queues after %d loads, want 3 after 1", got, client.lists)
		}
		screen := m.View().Content
		for _, want := range []string{"invoices", "1250", "98012", "42.5", "1h", "invoice-process", "new-hire (off)"} {
			if !strings.Contains(screen, want) {
				t.Errorf("screen lacks %q:\n%s", want, screen)
			}
		}
		if cmd := m.poll(); cmd != nil {
			t.Error("polled again before 5 s")
		}
		*now = now.Add(pollEvery)
		client.queues, client.stats = client.queues[:1], client.stats[:1]
		carryOut(m, m.poll())
		if got := len(m.shownWorkQueues()); got != 1 || client.lists != 2 {
			t.Errorf("after 5 s: %d queues, %d loads; want 1 and 2", got, client.lists)
		}
	})
	t.Run("OutageKeepsTheList", func(t *testing.T) {
		client := newWorkQueueClient()
		m, now := setupWorkQueues(t, client)
		client.listErr = connect.NewError(connect.CodeUnavailable, "connection refused")
		*now = now.Add(pollEvery)
		carryOut(m, m.poll())
		screen := m.View().Content
		if !strings.Contains(screen, "onboarding") || !strings.Contains(screen, "cannot list work queues: server unreachable") {
			t.Errorf("want the old list and the reason:\n%s", screen)
		}
	})
	t.Run("EnterOpensTheItemsAndEscGoesBack", func(t *testing.T) {
		client := newWorkQueueClient()
		m, now := setupWorkQueues(t, client)
		carryOut(m, press(m, "enter"))
		if m.view != viewWorkItems || m.itemsQueue != "invoices" || len(client.itemReqs) != 1 ||
			client.itemReqs[0].GetQueue() != "invoices" || client.itemReqs[0].GetPageSize() != itemsShown {
			t.Fatalf("enter: view %d queue %q after %v", m.view, m.itemsQueue, client.itemReqs)
		}
		if got := len(m.shownWorkItems()); got != 4 {
			t.Errorf("shows %d items, want 4", got)
		}
		*now = now.Add(pollEvery)
		carryOut(m, m.poll())
		if len(client.itemReqs) != 2 {
			t.Errorf("the items are not polled: %d loads", len(client.itemReqs))
		}
		carryOut(m, press(m, "esc"))
		if m.view != viewWorkQueues || client.lists != 2 {
			t.Errorf("esc: view %d after %d queue loads, want the queues reloaded", m.view, client.lists)
		}
		// Another queue starts at its own top, without the last one's rows.
		carryOut(m, press(m, "j", "enter"))
		if m.itemsQueue != "onboarding" || client.itemReqs[len(client.itemReqs)-1].GetQueue() != "onboarding" {
			t.Errorf("second queue: %q", m.itemsQueue)
		}
	})
	t.Run("EnterOnAnItemOpensItsJob", func(t *testing.T) {
		client := newWorkQueueClient()
		m, _ := setupWorkQueues(t, client)
		carryOut(m, press(m, "enter"))
		press(m, "enter")
		if m.view != viewJob || m.detailJob != fixtureJobs()[0].GetId() {
			t.Fatalf("enter shows view %d job %q, want the item's job", m.view, m.detailJob)
		}
		press(m, "esc")
		if m.view != viewWorkItems {
			t.Errorf("esc goes to view %d, want the items", m.view)
		}
		press(m, "G", "enter")
		if m.view != viewWorkItems || !strings.Contains(m.flash, "has not been taken by a job") {
			t.Errorf("an item never taken: view %d flash %q", m.view, m.flash)
		}
	})
	t.Run("ItemsOfAQueueLeftAreDropped", func(t *testing.T) {
		client := newWorkQueueClient()
		m, _ := setupWorkQueues(t, client)
		press(m, "enter")
		press(m, "esc", "j", "enter")
		send(m, workItemsMsg{queue: "invoices", items: fixtureWorkItems()})
		if got := len(m.shownWorkItems()); got != 0 {
			t.Errorf("the onboarding items view shows %d items of invoices", got)
		}
	})
	t.Run("RetryAsksThenRetriesAndReloads", func(t *testing.T) {
		client := newWorkQueueClient()
		m, _ := setupWorkQueues(t, client)
		carryOut(m, press(m, "enter"))
		press(m, "R")
		if m.confirm == nil || m.confirm.prompt != "Retry item INV-1001 (FAILED) as a new item of invoices? y/n" {
			t.Fatalf("R asks %v", m.confirm)
		}
		carryOut(m, press(m, "y"))
		if len(client.retries) != 1 || client.retries[0][0] != fixtureWorkItems()[0].GetId() || len(client.itemReqs) != 2 {
			t.Errorf("retries %v after %d loads; want one retry and a reload", client.retries, len(client.itemReqs))
		}
		if m.flash != "retried item INV-1001 as 019a2b3c-0000-7000-8000-0000000000b1" {
			t.Errorf("flash %q", m.flash)
		}
	})
	t.Run("RetryRefusesAnItemNotFailed", func(t *testing.T) {
		client := newWorkQueueClient()
		m, _ := setupWorkQueues(t, client)
		carryOut(m, press(m, "enter"))
		press(m, "j", "R")
		if m.confirm != nil || !m.flashBad || !strings.Contains(m.flash, "item INV-1002 is IN_PROGRESS: only FAILED or ABANDONED items can be retried") {
			t.Errorf("R on an item in progress: confirm %v, flash %q", m.confirm, m.flash)
		}
		if len(client.retries) != 0 {
			t.Errorf("retried %v", client.retries)
		}
	})
	t.Run("FilterItems", func(t *testing.T) {
		client := newWorkQueueClient()
		m, _ := setupWorkQueues(t, client)
		carryOut(m, press(m, "enter"))
		typeText(m, "/status:failed exception:business")
		press(m, "enter")
		if rows := m.shownWorkItems(); len(rows) != 1 || rows[0].GetReference() != "INV-1003" {
			t.Errorf("status:failed exception:business shows %d rows", len(rows))
		}
		press(m, "R")
		if m.confirm == nil || !strings.Contains(m.confirm.prompt, "INV-1003") {
			t.Errorf("R on the filtered row asks %v", m.confirm)
		}
	})
	t.Run("FilterQueues", func(t *testing.T) {
		client := newWorkQueueClient()
		m, _ := setupWorkQueues(t, client)
		typeText(m, "/workflow:hire")
		press(m, "enter")
		if rows := m.shownWorkQueues(); len(rows) != 1 || rows[0].queue.GetName() != "onboarding" {
			t.Errorf("workflow:hire shows %d rows", len(rows))
		}
	})
	t.Run("MoreItemsThanShown", func(t *testing.T) {
		client := newWorkQueueClient()
		client.more = true
		m, _ := setupWorkQueues(t, client)
		carryOut(m, press(m, "enter"))
		if title := m.titleLine(); !strings.Contains(title, "the newest 500 (casarectl workqueues items invoices pages on)") {
			t.Errorf("title %q", title)
		}
	})
}
