-- A button's own word when its approve step renames it in the flow file
-- (`labels = { approve = "Pursue", reject = "Decline" }`), so `/approvals`
-- offers it again as it was first shown. NULL: the decision's usual word.
ALTER TABLE approval_buttons ADD COLUMN label TEXT;
