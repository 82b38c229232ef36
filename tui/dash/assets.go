package dash

import (
	"context"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

type assetsMsg struct {
	assets []*casarev1.Asset
	err    error
}

func (m *Model) loadAssets() tea.Cmd {
	c := m.opts.Clients.Assets
	if c == nil || !m.assets.start(m.now()) {
		return nil
	}
	ctx := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var all []*casarev1.Asset
		req := &casarev1.ListAssetsRequest{PageSize: 1000}
		for {
			res, err := c.ListAssets(ctx, req)
			if err != nil {
				return assetsMsg{err: err}
			}
			all = append(all, res.GetAssets()...)
			if res.GetNextPageToken() == "" {
				return assetsMsg{assets: all}
			}
			req.PageToken = res.GetNextPageToken()
		}
	}
}

// assetKey tells the rows apart: an asset's value for all robots and its
// overrides share the name.
func assetKey(a *casarev1.Asset) string { return a.GetName() + "\x00" + a.GetSelector() }

// assetType is the type as the tables show it: credential, secret, text.
func assetType(a *casarev1.Asset) string {
	return strings.ToLower(strings.TrimPrefix(a.GetType().String(), "ASSET_TYPE_"))
}

func (m *Model) shownAssets() []*casarev1.Asset {
	f := m.curs[viewAssets].filter
	if f.empty() {
		return m.assets.list
	}
	var out []*casarev1.Asset
	for _, a := range m.assets.list {
		typ := assetType(a)
		text := strings.ToLower(strings.Join([]string{a.GetName(), typ, a.GetSelector(), a.GetUsername()}, " "))
		if f.match(text, func(field string) (string, bool) {
			switch field {
			case "name":
				return strings.ToLower(a.GetName()), true
			case "type":
				return typ, true
			case "for", "label":
				return strings.ToLower(a.GetSelector()), true
			}
			return "", false
		}) {
			out = append(out, a)
		}
	}
	return out
}

var assetColumns = []column{
	{title: "NAME", min: 12, max: 28, prio: 0},
	{title: "TYPE", min: 10, max: 10, prio: 1},
	{title: "FOR ROBOTS", min: 10, max: 28, prio: 1},
	{title: "VALUE", min: 10, max: 40, prio: 2},
	{title: "UPDATED", min: 7, max: 7, prio: 3, right: true},
	{title: "BY", min: 6, max: 16, prio: 4},
}

// assetCells shows what the API gives: a secret or a password arrives as
// "***" and stays so; a credential shows its username.
func assetCells(a *casarev1.Asset, now time.Time, cells []string) {
	cells[0] = a.GetName()
	cells[1] = assetType(a)
	cells[2] = "all"
	if s := a.GetSelector(); s != "" {
		cells[2] = s
	}
	switch a.GetType() {
	case casarev1.AssetType_ASSET_TYPE_CREDENTIAL:
		cells[3] = a.GetUsername() + " / ***"
	case casarev1.AssetType_ASSET_TYPE_SECRET:
		cells[3] = "***"
	default:
		cells[3] = firstLine(a.GetValue())
	}
	cells[4] = "-"
	if t := a.GetUpdatedAt(); t != nil {
		cells[4] = since(t.AsTime(), now)
	}
	cells[5] = dash(a.GetUpdatedBy())
}
