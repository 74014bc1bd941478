-- Argo CD health of an OrderPipeline (order-pipeline.dev/v1alpha1), from its Ready condition and
-- its canary rollouts (status.rollout.<component>): Healthy when Ready is True for the current
-- generation and no rollout runs; Progressing while the operator has not caught up, is still
-- creating things or a rollout steps on; Suspended while a rollout is paused (waiting for a
-- promote); Degraded when a component failed or a rollout was rolled back.
local hs = {}
local progressing_reasons = {Creating = true, Progressing = true, Reconciling = true, QueueNotEmpty = true}

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. generation
  return hs
end

local ready = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  end
end

-- The first component (in rollout order) that was rolled back, is paused or is progressing.
local rolled_back, paused, progressing = nil, nil, nil
if obj.status.rollout ~= nil then
  for _, component in ipairs({"processor", "api"}) do
    local rollout = obj.status.rollout[component]
    if rollout ~= nil then
      local back = rollout.phase == "Degraded"
      for _, condition in ipairs(rollout.conditions or {}) do
        if condition.type == "RolledBack" and condition.status == "True" then
          back = true
        end
      end
      local says = component .. ": " .. (rollout.message or rollout.phase or "")
      if back and rolled_back == nil then
        rolled_back = component .. " rolled back: " .. (rollout.abortReason or rollout.message or "")
      elseif rollout.phase == "Paused" and paused == nil then
        paused = says
      elseif rollout.phase == "Progressing" and progressing == nil then
        progressing = says
      end
    end
  end
end
if rolled_back ~= nil then
  hs.status = "Degraded"
  hs.message = rolled_back
  return hs
end

if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = (ready and ready.message) or "Ready not reported yet"
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Ready is from generation " .. ready.observedGeneration
  return hs
end
if ready.status == "False" and not progressing_reasons[ready.reason] then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
  return hs
end
if paused ~= nil then
  hs.status = "Suspended"
  hs.message = paused
  return hs
end
if progressing ~= nil then
  hs.status = "Progressing"
  hs.message = progressing
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
hs.status = "Progressing"
hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
return hs
