package dash

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// itemsShown is how many of a queue's items the items view loads: the
// newest, which are what an operator looks at; casarectl workqueues items
// pages through the rest.
const itemsShown = 500

// workQueueRow is a queue with its figures, as ListWorkQueues pairs them.
type workQueueRow struct {
	queue *casarev1.WorkQueue
	stats *casarev1.WorkQueueStats
}

type workQueuesMsg struct {
	rows []workQueueRow
	err  error
}

type workItemsMsg struct {
	queue string
	items []*casarev1.WorkItem
	more  bool
	err   error
}

// reloadWorkItemsMsg asks for the items again after a retry, so the new
// state shows at once rather than at the next poll.
type reloadWorkItemsMsg struct{}

func (m *Model) loadWorkQueues() tea.Cmd {
	c := m.opts.Clients.WorkQueues
	if c == nil || !m.workQueues.start(m.now()) {
		return nil
	}
	ctx := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var rows []workQueueRow
		req := &casarev1.ListWorkQueuesRequest{PageSize: 1000}
		for {
			res, err := c.ListWorkQueues(ctx, req)
			if err != nil {
				return workQueuesMsg{err: err}
			}
			for i, q := range res.GetQueues() {
				row := workQueueRow{queue: q}
				if i < len(res.GetStats()) {
					row.stats = res.GetStats()[i]
				}
				rows = append(rows, row)
			}
			if res.GetNextPageToken() == "" {
				return workQueuesMsg{rows: rows}
			}
			req.PageToken = res.GetNextPageToken()
		}
	}
}

func (m *Model) loadWorkItems() tea.Cmd {
	c := m.opts.Clients.WorkQueues
	queue := m.itemsQueue
	if c == nil || queue == "" || !m.workItems.start(m.now()) {
		return nil
	}
	ctx := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res, err := c.ListWorkItems(ctx, &casarev1.ListWorkItemsRequest{Queue: queue, PageSize: itemsShown})
		if err != nil {
			return workItemsMsg{queue: queue, err: err}
		}
		return workItemsMsg{queue: queue, items: res.GetItems(), more: res.GetNextPageToken() != ""}
	}
}

// takeWorkItems applies a load of items, unless it is of a queue the
// operator has left since.
func (m *Model) takeWorkItems(msg workItemsMsg) {
	if msg.queue != m.itemsQueue {
		m.workItems.loading = false
		return
	}
	m.workItems.take(msg.items, msg.err)
	if msg.err == nil {
		m.itemsMore = msg.more
	}
}

func (m *Model) shownWorkQueues() []workQueueRow {
	f := m.curs[viewWorkQueues].filter
	if f.empty() {
		return m.workQueues.list
	}
	var out []workQueueRow
	for _, r := range m.workQueues.list {
		q := r.queue
		workflow := strings.ToLower(q.GetTrigger().GetWorkflowName())
		text := strings.ToLower(q.GetName()+" "+q.GetDescription()) + " " + workflow
		if f.match(text, func(field string) (string, bool) {
			switch field {
			case "name", "queue":
				return strings.ToLower(q.GetName()), true
			case "workflow", "trigger":
				return workflow, true
			}
			return "", false
		}) {
			out = append(out, r)
		}
	}
	return out
}

func (m *Model) shownWorkItems() []*casarev1.WorkItem {
	f := m.curs[viewWorkItems].filter
	if f.empty() {
		return m.workItems.list
	}
	var out []*casarev1.WorkItem
	for _, it := range m.workItems.list {
		status := strings.ToLower(itemStatus(it.GetStatus()))
		exception := itemException(it.GetException())
		text := strings.ToLower(strings.Join([]string{it.GetId(), it.GetReference(), status, exception, it.GetReason(), it.GetJobId()}, " "))
		if f.match(text, func(field string) (string, bool) {
			switch field {
			case "id":
				return strings.ToLower(it.GetId()), true
			case "ref", "reference":
				return strings.ToLower(it.GetReference()), true
			case "status":
				return status, true
			case "exception", "type":
				return exception, true
			case "job":
				return strings.ToLower(it.GetJobId()), true
			case "reason":
				return strings.ToLower(it.GetReason()), true
			}
			return "", false
		}) {
			out = append(out, it)
		}
	}
	return out
}

func (m *Model) selectedWorkItem() *casarev1.WorkItem {
	id := m.cursor().sel
	for _, it := range m.workItems.list {
		if it.GetId() == id {
			return it
		}
	}
	return nil
}

// itemStatus is an item status as the tables show it: NEW, IN_PROGRESS.
func itemStatus(s casarev1.WorkItemStatus) string {
	if s == casarev1.WorkItemStatus_WORK_ITEM_STATUS_UNSPECIFIED {
		return "-"
	}
	return strings.TrimPrefix(s.String(), "WORK_ITEM_STATUS_")
}

func itemException(e casarev1.WorkItemException) string {
	if e == casarev1.WorkItemException_WORK_ITEM_EXCEPTION_UNSPECIFIED {
		return "-"
	}
	return strings.ToLower(strings.TrimPrefix(e.String(), "WORK_ITEM_EXCEPTION_"))
}

func itemPriority(p casarev1.WorkItemPriority) string {
	if p == casarev1.WorkItemPriority_WORK_ITEM_PRIORITY_UNSPECIFIED {
		return "normal"
	}
	return strings.ToLower(strings.TrimPrefix(p.String(), "WORK_ITEM_PRIORITY_"))
}

var workQueueColumns = []column{
	{title: "NAME", min: 12, max: 20, prio: 0},
	{title: "NEW", min: 6, max: 7, prio: 0, right: true},
	{title: "IN PROGRESS", min: 11, max: 11, prio: 1, right: true},
	{title: "SUCCESSFUL", min: 10, max: 10, prio: 3, right: true},
	{title: "FAILED", min: 6, max: 8, prio: 1, right: true},
	{title: "PER MIN", min: 7, max: 7, prio: 4, right: true},
	{title: "SLA BREACHES", min: 12, max: 12, prio: 2, right: true},
	{title: "OLDEST NEW", min: 10, max: 10, prio: 1, right: true},
	{title: "TRIGGER", min: 16, max: 28, prio: 3},
}

func workQueueCells(r workQueueRow, now time.Time, cells []string) {
	count := func(status string) string { return strconv.FormatInt(r.stats.GetCounts()[status], 10) }
	cells[0] = r.queue.GetName()
	cells[1] = count("NEW")
	cells[2] = count("IN_PROGRESS")
	cells[3] = count("SUCCESSFUL")
	cells[4] = count("FAILED")
	cells[5] = strconv.FormatFloat(r.stats.GetItemsPerMinute(), 'f', 1, 64)
	cells[6] = strconv.FormatInt(r.stats.GetSlaBreaches(), 10)
	cells[7] = "-"
	if t := r.stats.GetOldestNew(); t != nil {
		cells[7] = since(t.AsTime(), now)
	}
	cells[8] = "-"
	if t := r.queue.GetTrigger(); t.GetWorkflowName() != "" {
		cells[8] = t.GetWorkflowName()
		if !t.GetEnabled() {
			cells[8] += " (off)"
		}
	}
}

var workItemColumns = []column{
	{title: "ID", min: 10, max: 36, prio: 3, tail: true},
	{title: "REFERENCE", min: 10, max: 20, prio: 0},
	{title: "STATUS", min: 11, max: 11, prio: 0},
	{title: "PRIORITY", min: 8, max: 8, prio: 4},
	{title: "RETRY", min: 5, max: 5, prio: 1, right: true},
	{title: "EXCEPTION", min: 11, max: 11, prio: 2},
	{title: "REASON", min: 16, max: 40, prio: 5},
	{title: "JOB", min: 9, max: 14, prio: 2, tail: true},
	{title: "AGE", min: 4, max: 5, prio: 1, right: true},
}

func workItemCells(it *casarev1.WorkItem, now time.Time, cells []string) {
	cells[0] = it.GetId()
	cells[1] = dash(it.GetReference())
	cells[2] = itemStatus(it.GetStatus())
	cells[3] = itemPriority(it.GetPriority())
	cells[4] = strconv.Itoa(int(it.GetRetry()))
	cells[5] = itemException(it.GetException())
	cells[6] = dash(firstLine(it.GetReason()))
	cells[7] = dash(it.GetJobId())
	cells[8] = "-"
	if t := it.GetCreatedAt(); t != nil {
		cells[8] = since(t.AsTime(), now)
	}
}

// openWorkQueue shows the selected queue's items.
func (m *Model) openWorkQueue() tea.Cmd {
	name := m.cursor().sel
	if name == "" {
		return nil
	}
	if name != m.itemsQueue {
		m.itemsQueue, m.itemsMore = name, false
		m.workItems = polled[*casarev1.WorkItem]{}
		*m.curs[viewWorkItems] = cursor{}
	}
	m.push(viewWorkItems)
	return m.loadWorkItems()
}

// openWorkItemJob opens the job that took the selected item last.
func (m *Model) openWorkItemJob() tea.Cmd {
	it := m.selectedWorkItem()
	if it == nil {
		return nil
	}
	if it.GetJobId() == "" {
		m.say(fmt.Sprintf("item %s has not been taken by a job", dash(it.GetReference())), nil)
		return nil
	}
	return m.openJob(it.GetJobId())
}

// askRetryItem asks before retrying the selected item; only a FAILED or
// ABANDONED item can be retried, as the server has it.
func (m *Model) askRetryItem() tea.Cmd {
	it := m.selectedWorkItem()
	if it == nil {
		return nil
	}
	switch it.GetStatus() {
	case casarev1.WorkItemStatus_WORK_ITEM_STATUS_FAILED, casarev1.WorkItemStatus_WORK_ITEM_STATUS_ABANDONED:
	default:
		m.say(fmt.Sprintf("item %s is %s: only FAILED or ABANDONED items can be retried", dash(it.GetReference()), itemStatus(it.GetStatus())), nil)
		m.flashBad = true
		return nil
	}
	id, ref := it.GetId(), dash(it.GetReference())
	m.confirm = &confirmation{
		prompt: fmt.Sprintf("Retry item %s (%s) as a new item of %s? y/n", ref, itemStatus(it.GetStatus()), m.itemsQueue),
		yes:    func() tea.Cmd { return m.retryItem(id, ref) },
	}
	return nil
}

// retryItem retries an item, then reloads the items so the old one's
// RETRIED and the new one's NEW show at once.
func (m *Model) retryItem(id, ref string) tea.Cmd {
	c := m.opts.Clients.WorkQueues
	if c == nil {
		return nil
	}
	ctx := m.ctx
	act := func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res, err := c.RetryWorkItems(ctx, &casarev1.RetryWorkItemsRequest{Ids: []string{id}})
		if err != nil {
			return actionMsg{text: "retry item " + ref, err: err}
		}
		text := "retried item " + ref
		if ids := res.GetIds(); len(ids) == 1 {
			text += " as " + ids[0]
		}
		return actionMsg{text: text}
	}
	return tea.Sequence(act, func() tea.Msg { return reloadWorkItemsMsg{} })
}
