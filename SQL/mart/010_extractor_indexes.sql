-- A cycle replaces the state intervals of the agents it touches from a point in time on
-- (`agent_key`, `started_at >= …`): without this index that delete read the whole fact table
-- every cycle, a cost that grew with the mart.
CREATE INDEX IF NOT EXISTS fact_agent_state_agent ON mart.fact_agent_state (agent_key, started_at);
