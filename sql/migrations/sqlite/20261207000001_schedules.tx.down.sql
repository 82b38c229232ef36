DROP TABLE schedule_calendars;
--bun:split
DROP TABLE schedules;
--bun:split
DROP TABLE calendars;
