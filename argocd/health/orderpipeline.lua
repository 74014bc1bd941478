-- Argo CD health of an OrderPipeline (order-pipeline.dev/v1alpha1), from its Ready condition:
-- Healthy when Ready is True for the current generation; Progressing while the operator has not
-- caught up or is still creating things; Degraded when a component failed.
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
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
if progressing_reasons[ready.reason] then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
return hs
