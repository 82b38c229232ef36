DROP TABLE work_queue_minutes;
--bun:split
DROP TABLE work_queue_counts;
--bun:split
DROP TABLE work_item_events;
--bun:split
DROP TABLE work_items;
--bun:split
DROP TABLE work_queues;
